import Dispatch
import Foundation
import Synchronization

/// What the waited-for signals have done so far: the first one's number, how many came, and the second-signal
/// handler, which runs once, when both it is set and a second signal has come, whichever happens last.
struct SignalTally {
    private(set) var first: Int32?
    private(set) var count = 0
    private var secondSignal: (@Sendable () -> Void)?
    private var secondSignalRan = false

    /// Counts `delivered` signals `number`; whether they include the first, and the handler to run now, if any.
    mutating func record(_ number: Int32, delivered: Int) -> (isFirst: Bool, run: (@Sendable () -> Void)?) {
        let isFirst = first == nil
        if isFirst { first = number }
        count += delivered
        return (isFirst, takeSecondSignalHandler())
    }

    /// Sets the second-signal handler; returns it to run now when a second signal already came.
    mutating func setSecondSignalHandler(_ handler: @escaping @Sendable () -> Void) -> (@Sendable () -> Void)? {
        secondSignal = handler
        return takeSecondSignalHandler()
    }

    private mutating func takeSecondSignalHandler() -> (@Sendable () -> Void)? {
        guard count >= 2, !secondSignalRan, let handler = secondSignal else { return nil }
        secondSignalRan = true
        return handler
    }
}

/// Turns SIGTERM/SIGINT into a blocking wait on the main thread, via dispatch sources, and runs
/// handlers for other signals (SIGHUP) as they come.
final class SignalWaiter {
    private final class State: Sendable {
        // One lock for the signals and the handler, so a second signal that comes before the handler is set
        // is acted on when it is set, and never twice.
        let tally = Mutex(SignalTally())
        let arrived = DispatchSemaphore(value: 0)
    }

    private let sources: [any DispatchSourceSignal]
    private let state = State()
    private var repeating: [any DispatchSourceSignal] = []

    /// Installs the handlers; the default actions are ignored so the process is not killed.
    init(signals: [Int32]) {
        let queue = DispatchQueue(label: "stovepipe.signals")
        var sources: [any DispatchSourceSignal] = []
        for number in signals {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [state, source] in
                // A dispatch signal source coalesces: `data` is how many signals came since the last event.
                let delivered = max(1, Int(clamping: source.data))
                let (isFirst, run) = state.tally.withLock { $0.record(number, delivered: delivered) }
                if isFirst { state.arrived.signal() }
                run?()
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// Blocks until the first signal arrives and returns its number.
    func wait() -> Int32 {
        state.arrived.wait()
        return state.tally.withLock { $0.first ?? 0 }
    }

    /// Runs `handler` on every `number` signal, on its own queue: these signals neither end `wait()`
    /// nor count as a second signal, and a slow handler never delays shutdown.
    func onEvery(_ number: Int32, _ handler: @escaping @Sendable () -> Void) {
        // A signal held since start-up (`hold`) is blocked on every thread, so its default action never runs,
        // and it may be pending: SIG_IGN would discard it (POSIX sigaction), the source's signalfd reads it.
        if !Self.isBlocked(number) { signal(number, SIG_IGN) }
        let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "stovepipe.signal.\(number)"))
        source.setEventHandler(handler: handler)
        source.resume()
        repeating.append(source)
    }

    /// Blocks `signals` on the calling thread, and so on every thread it starts later; returns the mask before.
    /// Called first thing in `main`, it keeps a signal that comes during start-up pending, instead of acted on.
    static func hold(_ signals: [Int32]) -> sigset_t {
        var held = sigset_t()
        sigemptyset(&held)
        for number in signals { sigaddset(&held, number) }
        var previous = sigset_t()
        pthread_sigmask(SIG_BLOCK, &held, &previous)
        return previous
    }

    /// Puts back the mask `hold` returned; a signal that came meanwhile is acted on now.
    static func release(_ previous: sigset_t) {
        var previous = previous
        pthread_sigmask(SIG_SETMASK, &previous, nil)
    }

    private static func isBlocked(_ number: Int32) -> Bool {
        var current = sigset_t()
        pthread_sigmask(SIG_BLOCK, nil, &current)
        return sigismember(&current, number) == 1
    }

    /// What to do if another signal arrives during shutdown; runs at once if one already has.
    func onSecondSignal(_ handler: @escaping @Sendable () -> Void) {
        let run = state.tally.withLock { $0.setSecondSignalHandler(handler) }
        run?()
    }
}

@available(*, unavailable)
extension SignalWaiter: Sendable {}
