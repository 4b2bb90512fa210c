import Foundation

/// Runs blocking work (MySQL, subprocesses) on a new thread named `name`, off Swift's cooperative pool, as part of the
/// calling task.
public func onOwnThread<Result: Sendable>(
    named name: String = "test-work", _ body: @escaping @Sendable () throws -> Result
) async throws -> Result {
    // In the calling task, on an executor that owns the thread, the work keeps the task's locals: Swift Testing finds
    // the running test through them. From a bare Thread, a failing expectation in `body` is recorded against
    // «unknown» test, and the test itself passes.
    let executor = ThreadExecutor(name: name)
    defer { executor.finish() }
    return try await withTaskExecutorPreference(executor) { try await runOnPreferredExecutor(body) }
}

/// Runs `body` on the task's preferred executor: a @concurrent function runs there (SE-0417), never on an actor.
@concurrent
private func runOnPreferredExecutor<Result: Sendable>(_ body: @Sendable () throws -> Result) async throws -> Result {
    try body()
}

/// A task executor running the jobs given to it on a thread of its own, until `finish()`.
public final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked Sendable: `jobs` and `finished` are read and written only while holding `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var finished = false

    /// Starts the thread, named `name`.
    public init(name: String) {
        let thread = Thread { [self] in run() }
        thread.name = name
        thread.start()
    }

    /// Runs `job` on the thread, after those given before it.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Ends the thread once the jobs given so far have run.
    public func finish() {
        condition.lock()
        finished = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty && !finished { condition.wait() }
            guard !jobs.isEmpty else {
                condition.unlock()
                return
            }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
