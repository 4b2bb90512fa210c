import Backends
import Domain
import Foundation
import Testing

private let created = Date(timeIntervalSince1970: 1_700_000_000)

/// A deterministic generator (SplitMix64), so a failing order can be reproduced.
private struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

private func request(_ queue: QueueName, _ number: UInt64) -> Request {
    Request(id: RequestID(queue: queue, number: number), uri: SourceURI("git://x/\(queue)/\(number)"), createdAt: created)
}

@Suite("MemoryRequestStore specifics")
struct MemoryRequestStoreTests {
    /// What `list` answers by definition: the queue's rows, n below `before`, newest first, at most `limit`.
    private static func expected(_ rows: [Request], queue: QueueName, before: UInt64?, limit: Int) -> [Request] {
        Array(
            rows.filter { row in row.queue == queue && before.map { row.id.number < $0 } ?? true }
                .sorted { $0.id.number > $1.id.number }
                .prefix(max(limit, 0)))
    }

    @Test("list pages match the definition across many requests created out of order, in several queues")
    func listMatchesTheDefinition() throws {
        var random = SplitMix64(state: 42)
        let queues = try ["team/main", "team/other", "solo"].map { try QueueName($0) }
        let store = MemoryRequestStore()
        var rows: [Request] = []
        // Mostly ascending, as a counter creates them, with gaps, stragglers created late, and the extremes.
        for (index, queue) in queues.enumerated() {
            var numbers = Array(stride(from: UInt64(1), through: 3_000, by: index + 1))
            numbers.append(contentsOf: [UInt64.max, UInt64.max - 1, 10_000])
            for _ in 0..<200 {
                numbers.swapAt(Int.random(in: 0..<numbers.count, using: &random), Int.random(in: 0..<numbers.count, using: &random))
            }
            for number in numbers {
                let row = request(queue, number)
                try store.create(row)
                rows.append(row)
            }
        }
        // An update shows in later pages, as it does in the stored row.
        var updated = request(queues[0], 1_500)
        updated.state = .processing
        try store.update(updated, oldVersion: 1, newVersion: 2)
        rows[try #require(rows.firstIndex { $0.id == updated.id })] = try store.get(updated.id)

        let empty = try QueueName("empty")
        for queue in queues + [empty] {
            let bounds: [UInt64?] = [nil, 0, 1, 2, 3, 4, 1_499, 1_500, 1_501, 2_999, 3_000, 3_001, 10_000, 10_001, UInt64.max - 1, UInt64.max]
            for before in bounds {
                for limit in [-1, 0, 1, 2, 7, 100, 5_000] {
                    let page = try store.list(queue: queue, before: before, limit: limit)
                    #expect(page == Self.expected(rows, queue: queue, before: before, limit: limit), "\(queue) before \(String(describing: before)) limit \(limit)")
                }
            }
            // Paging a whole queue by the last n seen gives every row once, newest first.
            var paged: [Request] = []
            var before: UInt64?
            while true {
                let page = try store.list(queue: queue, before: before, limit: 97)
                paged += page
                guard let last = page.last else { break }
                before = last.id.number
            }
            #expect(paged == Self.expected(rows, queue: queue, before: nil, limit: Int.max), "\(queue)")
        }
    }

    @Test("a failed create leaves list as it was")
    func failedCreateListsNothingNew() throws {
        let queue = try QueueName("q")
        let store = MemoryRequestStore()
        try store.create(request(queue, 2))
        var duplicate = request(queue, 2)
        duplicate.state = .processing
        #expect(throws: BackendError.alreadyExists) { try store.create(duplicate) }
        #expect(try store.list(queue: queue, before: nil, limit: 10) == [request(queue, 2)])
    }
}
