#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A condition variable and its mutex whose timed waits measure CLOCK_MONOTONIC, so a step of the wall clock
/// neither stretches nor cuts them short (NSCondition's timed wait measures CLOCK_REALTIME).
public final class MonotonicCondition: @unchecked Sendable {
    // @unchecked Sendable: the pthread mutex and condition are made for use from many threads; they live in
    // memory allocated once here, never moved, and destroyed only in deinit, when no thread can hold them.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    /// Makes an unlocked condition.
    public init() {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        condition = .allocate(capacity: 1)
        condition.initialize(to: pthread_cond_t())
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        #if !canImport(Darwin)
        // pthread_condattr_setclock(3): pthread_cond_timedwait's absolute time is then read on this clock.
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        #endif
        pthread_cond_init(condition, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        condition.deallocate()
        mutex.deallocate()
    }

    /// Takes the mutex.
    public func lock() { pthread_mutex_lock(mutex) }

    /// Releases the mutex.
    public func unlock() { pthread_mutex_unlock(mutex) }

    /// Wakes one waiting thread.
    public func signal() { pthread_cond_signal(condition) }

    /// Wakes every waiting thread.
    public func broadcast() { pthread_cond_broadcast(condition) }

    /// Releases the mutex until woken (or spuriously), then takes it again; call with the mutex held.
    public func wait() { pthread_cond_wait(condition, mutex) }

    /// As `wait()`, for at most `timeout` (zero or less returns at once); false when the time ran out.
    @discardableResult
    public func wait(for timeout: Duration) -> Bool {
        let (seconds, attoseconds) = timeout.components
        guard seconds > 0 || (seconds == 0 && attoseconds > 0) else { return false }
        var deadline = timespec()
        clock_gettime(CLOCK_MONOTONIC, &deadline)
        // Capped at about 31 years so that the sum cannot overflow time_t.
        let wholeSeconds = min(seconds, 1_000_000_000)
        let nanoseconds = Int(deadline.tv_nsec) + Int(attoseconds / 1_000_000_000)
        deadline.tv_sec += Int(wholeSeconds) + nanoseconds / 1_000_000_000
        deadline.tv_nsec = nanoseconds % 1_000_000_000
        return pthread_cond_timedwait(condition, mutex, &deadline) != ETIMEDOUT
    }
}
