import Conditions
import Domain
import Foundation

/// Runs readiness checks that may block (a database round trip) on a thread of its own and keeps their latest
/// results, so `/readyz` answers from them at once, on the event loop, however busy the workers or slow the database.
public final class ReadinessMonitor: @unchecked Sendable {
    // @unchecked Sendable: `latest`, `runningSince`, `requested`, `stopped` and `threadRunning` are only read or
    // written with `condition` locked, which no thread holds while a check runs.
    private let condition = MonotonicCondition()
    private var latest: (checks: [ReadinessCheck], finishedAt: Int64)?
    private var runningSince: Int64?
    private var requested = false
    private var stopped = false
    private var threadRunning = false

    private let name: String
    private let interval: Int64
    private let timeout: Int64
    private let freshness: Int64
    private let timeoutText: String
    private let staleText: String
    private let check: @Sendable () -> [ReadinessCheck]

    /// Makes a monitor; nothing runs until `start`.
    /// - Parameters:
    ///   - name: The check reported failing when the checks do not finish in time (e.g. `database`).
    ///   - interval: How long after one check finished the next starts.
    ///   - timeout: A check running longer than this, or results older than `interval` plus this, read as failing.
    ///   - freshness: A read that finds results older than this asks for a new check at once (it does not wait for it).
    ///   - check: The checks; may block, and runs only on the monitor's thread.
    public init(
        name: String, interval: Duration = .seconds(2), timeout: Duration = .seconds(2),
        freshness: Duration = .seconds(1), check: @escaping @Sendable () -> [ReadinessCheck]
    ) {
        self.name = name
        self.interval = max(1_000_000, interval.nanoseconds)
        self.timeout = max(1_000_000, timeout.nanoseconds)
        self.freshness = max(0, freshness.nanoseconds)
        self.timeoutText = Self.seconds(self.timeout)
        self.staleText = Self.seconds(self.interval + self.timeout)
        self.check = check
    }

    /// Starts the checking thread and waits at most `wait` for the first results (a caller on Swift's concurrency
    /// pool passes zero). Calling it again does nothing.
    public func start(waitingAtMost wait: Duration = .seconds(2)) {
        condition.lock()
        defer { condition.unlock() }
        guard !threadRunning, !stopped else { return }
        threadRunning = true
        let thread = Thread { [self] in run() }
        thread.name = "readiness"
        thread.start()
        let deadline = BootClock.nanoseconds() + max(0, wait.nanoseconds)
        while latest == nil {
            let now = BootClock.nanoseconds()
            guard now < deadline else { break }
            condition.wait(for: .nanoseconds(deadline - now))
        }
    }

    /// Stops the thread after the check it may be running; waits for it at most `timeout`. True once it returned.
    @discardableResult
    public func stop() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        stopped = true
        condition.broadcast()
        let deadline = BootClock.nanoseconds() + timeout
        while threadRunning {
            let now = BootClock.nanoseconds()
            guard now < deadline else { return false }
            condition.wait(for: .nanoseconds(deadline - now))
        }
        return true
    }

    /// The latest results, without blocking: a check running past the timeout, results too old, or none yet read as
    /// one failing check under the monitor's name.
    public func current() -> [ReadinessCheck] {
        let now = BootClock.nanoseconds()
        condition.lock()
        defer { condition.unlock() }
        if let since = runningSince, now - since > timeout {
            return failing("the check did not finish within \(timeoutText) s")
        }
        guard let latest else { return failing("the first check has not finished") }
        let age = now - latest.finishedAt
        if age > freshness, runningSince == nil, !requested, !stopped {
            requested = true
            condition.broadcast()
        }
        if age > interval + timeout { return failing("no check finished in the last \(staleText) s") }
        return latest.checks
    }

    /// `nanoseconds` as seconds for a detail: `2`, or `0.2` when not whole (to the millisecond).
    private static func seconds(_ nanoseconds: Int64) -> String {
        let milliseconds = nanoseconds / 1_000_000
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000)" : "\(Double(milliseconds) / 1000)"
    }

    private func failing(_ detail: String) -> [ReadinessCheck] {
        [ReadinessCheck(name: name, ok: false, detail: detail)]
    }

    private func run() {
        condition.lock()
        while !stopped {
            runningSince = BootClock.nanoseconds()
            requested = false
            condition.unlock()
            let checks = check()
            condition.lock()
            let finishedAt = BootClock.nanoseconds()
            latest = (checks, finishedAt)
            runningSince = nil
            condition.broadcast()
            let next = finishedAt + interval
            while !stopped && !requested {
                let now = BootClock.nanoseconds()
                guard now < next else { break }
                condition.wait(for: .nanoseconds(next - now))
            }
        }
        threadRunning = false
        condition.broadcast()
        condition.unlock()
    }
}
