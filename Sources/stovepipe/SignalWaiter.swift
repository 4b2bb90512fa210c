import Dispatch
import Foundation
import Synchronization

/// Turns SIGTERM/SIGINT into a blocking wait on the main thread, via dispatch sources, and runs
/// handlers for other signals (SIGHUP) as they come.
final class SignalWaiter {
    private final class State: Sendable {
        let received = Mutex<[Int32]>([])
        let arrived = DispatchSemaphore(value: 0)
        let secondSignal = Mutex<(@Sendable () -> Void)?>(nil)
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
            source.setEventHandler { [state] in
                let count = state.received.withLock { list in
                    list.append(number)
                    return list.count
                }
                if count == 1 {
                    state.arrived.signal()
                } else if let handler = state.secondSignal.withLock({ $0 }) {
                    handler()
                }
            }
            source.resume()
            sources.append(source)
        }
        self.sources = sources
    }

    /// Blocks until the first signal arrives and returns its number.
    func wait() -> Int32 {
        state.arrived.wait()
        return state.received.withLock { $0.first ?? 0 }
    }

    /// Runs `handler` on every `number` signal, on its own queue: these signals neither end `wait()`
    /// nor count as a second signal, and a slow handler never delays shutdown.
    func onEvery(_ number: Int32, _ handler: @escaping @Sendable () -> Void) {
        signal(number, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "stovepipe.signal.\(number)"))
        source.setEventHandler(handler: handler)
        source.resume()
        repeating.append(source)
    }

    /// What to do if another signal arrives during shutdown.
    func onSecondSignal(_ handler: @escaping @Sendable () -> Void) { state.secondSignal.withLock { $0 = handler } }
}

@available(*, unavailable)
extension SignalWaiter: Sendable {}
