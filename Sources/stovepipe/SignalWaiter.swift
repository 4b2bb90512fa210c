import Dispatch
import Foundation
import Synchronization

/// Turns SIGTERM/SIGINT into a blocking wait on the main thread, via dispatch sources.
final class SignalWaiter: Sendable {
    private let sources: [any DispatchSourceSignal]
    private let received = Mutex<[Int32]>([])
    private let arrived = DispatchSemaphore(value: 0)
    private let secondSignal = Mutex<(@Sendable () -> Void)?>(nil)

    /// Installs the handlers; the default actions are ignored so the process is not killed.
    init(signals: [Int32]) {
        let queue = DispatchQueue(label: "stovepipe.signals")
        var sources: [any DispatchSourceSignal] = []
        for number in signals {
            signal(number, SIG_IGN)
            sources.append(DispatchSource.makeSignalSource(signal: number, queue: queue))
        }
        self.sources = sources
        for (number, source) in zip(signals, sources) {
            source.setEventHandler { [received, arrived, secondSignal] in
                let count = received.withLock { list in
                    list.append(number)
                    return list.count
                }
                if count == 1 {
                    arrived.signal()
                } else if let handler = secondSignal.withLock({ $0 }) {
                    handler()
                }
            }
            source.resume()
        }
    }

    /// Blocks until the first signal arrives and returns its number.
    func wait() -> Int32 {
        arrived.wait()
        return received.withLock { $0.first ?? 0 }
    }

    /// What to do if another signal arrives during shutdown.
    func onSecondSignal(_ handler: @escaping @Sendable () -> Void) { secondSignal.withLock { $0 = handler } }
}
