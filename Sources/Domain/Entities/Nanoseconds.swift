import Glibc

extension Duration {
    /// The duration in whole nanoseconds, saturating at Int64's range.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}

/// The clock `ContinuousClock` reads on Linux (CLOCK_BOOTTIME), in nanoseconds: timing a request or a store
/// call with it spares `ContinuousClock.now` and turning a 128-bit `Duration` back into nanoseconds.
package enum BootClock {
    /// Nanoseconds since boot, suspended time included.
    package static func nanoseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}
