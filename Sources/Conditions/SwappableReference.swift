import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// An object that readers take without a lock while a writer replaces it (read-copy-update): a reader gets the value
/// current when it asked, and holds it as long as it likes; a replaced value is released once no reader can still be
/// taking it.
public final class SwappableReference<Value: AnyObject & Sendable>: Sendable {
    // The current value, retained once by this reference.
    private let current: Atomic<Unmanaged<Value>>
    // Readers between reading `current` and retaining what they read count themselves in the counter of the epoch's
    // parity; a writer moves to the next epoch after its swap and waits for the previous epoch's counter to reach 0
    // before it releases the value it replaced, so that no reader retains a value already freed.
    private let epoch = Atomic<Int>(0)
    private let evenReaders = Atomic<Int>(0)
    private let oddReaders = Atomic<Int>(0)
    // Writers one at a time: each must have waited out its epoch's readers before the next flips the parity back.
    private let writer = Mutex<Void>(())

    /// A reference to `value`.
    public init(_ value: Value) {
        current = Atomic(Unmanaged.passRetained(value))
    }

    deinit {
        current.load(ordering: .sequentiallyConsistent).release()
    }

    /// The value stored last; no lock is taken, and no writer is waited for.
    public func load() -> Value {
        while true {
            let seen = epoch.load(ordering: .sequentiallyConsistent)
            count(parity: seen & 1, by: 1)
            // A writer that moved on meanwhile may not be waiting for this counter: try again in the new epoch.
            guard epoch.load(ordering: .sequentiallyConsistent) == seen else {
                count(parity: seen & 1, by: -1)
                continue
            }
            let value = current.load(ordering: .sequentiallyConsistent)
            // Retained before the counter drops: from then on the writer may release its own reference.
            _ = value.retain()
            count(parity: seen & 1, by: -1)
            return value.takeRetainedValue()
        }
    }

    /// Makes `value` the one readers get, and releases the one it replaces once no reader is still taking it; a
    /// reader that took it keeps it until done.
    public func store(_ value: Value) {
        writer.withLock { _ in
            let replaced = current.exchange(Unmanaged.passRetained(value), ordering: .sequentiallyConsistent)
            let previous = epoch.load(ordering: .sequentiallyConsistent)
            epoch.store(previous &+ 1, ordering: .sequentiallyConsistent)
            // A reader counts itself for a few instructions; one preempted there is let run.
            while readers(parity: previous & 1) != 0 { sched_yield() }
            replaced.release()
        }
    }

    private func count(parity: Int, by delta: Int) {
        if parity == 0 {
            evenReaders.add(delta, ordering: .sequentiallyConsistent)
        } else {
            oddReaders.add(delta, ordering: .sequentiallyConsistent)
        }
    }

    private func readers(parity: Int) -> Int {
        parity == 0 ? evenReaders.load(ordering: .sequentiallyConsistent) : oddReaders.load(ordering: .sequentiallyConsistent)
    }
}
