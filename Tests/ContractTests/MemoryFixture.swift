import Backends
import Domain

/// The in-memory stores and broker: the reference backend.
struct MemoryFixture: BackendFixture {
    let name = "memory"

    func makeBackend() throws -> any TestBackend { MemoryTestBackend() }
}

/// Fresh in-memory stores; each broker is independent.
struct MemoryTestBackend: TestBackend {
    let stores = StoreSet(
        requests: MemoryRequestStore(), uris: MemoryRequestURIStore(), queues: MemoryQueueStore(), counter: MemoryCounter()
    )

    func makeBroker(policy: RetryPolicy) throws -> any MessageBroker {
        MemoryBroker(policy: policy, workerThreads: 4, logger: silentLogger)
    }

    func tearDown() {}
}
