import Glibc

// Domain's `BootClock` is the same six lines; MySQLClient knows no domain module.
/// The clock `ContinuousClock` reads on Linux (CLOCK_BOOTTIME), in nanoseconds: leases and idle checks time
/// themselves with it to spare `ContinuousClock.now` and 128-bit `Duration` arithmetic on every lease.
enum BootClock {
    /// Nanoseconds since boot, suspended time included.
    static func nanoseconds() -> Int64 {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at Int64's range.
    var saturatingNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds < 0 ? .min : .max }
        return scaled.addingReportingOverflow(attoseconds / 1_000_000_000).partialValue
    }
}
