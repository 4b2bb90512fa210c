import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite(.serialized, .enabled(if: mysqlEndToEndRuns)) struct CrashRecoveryTests {
    @Test func killNineDuringIngestLosesNoAcceptedRequest() throws {
        let database = try ScratchDatabase()
        defer { database.drop() }
        let migrated = try runStovepipe(["migrate", "--mysql-url", database.url])
        #expect(migrated.status == 0, "\(migrated.stderr)")

        let repository = try TemporaryRepository()
        defer { repository.remove() }
        try repository.commit("c0")
        let queues = try gitQueuesFile(repository)
        defer { try? FileManager.default.removeItem(at: queues) }
        let arguments = [
            "--mysql-url", database.url, "--queues", queues.path, "--topic-lease-seconds", "2",
            "--topic-visibility-seconds", "2", "--topic-poll-interval-ms", "100",
        ]

        let first = try RunningServer(arguments: arguments)
        let port = first.port
        let accepted = Mutex<Set<String>>([])
        let stop = Atomic<Bool>(false)
        let done = DispatchSemaphore(value: 0)
        // One thread moves the branch and ingests each new head; two more ingest whatever the head is.
        let committer = Thread {
            defer { done.signal() }
            var n = 1
            while !stop.load(ordering: .relaxed) {
                guard (try? repository.commit("c\(n)")) != nil else { return }
                n += 1
                guard let response = try? http("POST", "/queues/app/main/ingest", port: port) else { continue }
                if (200..<300).contains(response.status), let id = response.json["id"] as? String {
                    _ = accepted.withLock { $0.insert(id) }
                }
            }
        }
        let repeaters = (0..<2).map { _ in
            Thread {
                defer { done.signal() }
                while !stop.load(ordering: .relaxed) {
                    guard let response = try? http("POST", "/queues/app/main/ingest", port: port) else { continue }
                    if (200..<300).contains(response.status), let id = response.json["id"] as? String {
                        _ = accepted.withLock { $0.insert(id) }
                    }
                }
            }
        }
        committer.start()
        repeaters.forEach { $0.start() }
        #expect(eventually(within: 60) { accepted.withLock { $0.count } >= 25 })
        kill(first.process.processIdentifier, SIGKILL)
        first.process.waitUntilExit()
        stop.store(true, ordering: .relaxed)
        for _ in 0..<3 { _ = done.wait(timeout: .now() + 60) }

        let ids = accepted.withLock { $0 }
        #expect(ids.count >= 25)
        let second = try RunningServer(arguments: arguments)
        func state(_ id: String) -> String? {
            (try? http("GET", "/requests/\(id)", port: second.port))?.json["state"] as? String
        }
        let settled = eventually(within: 60) {
            ids.allSatisfy { ["processing", "superseded"].contains(state($0)) }
        }
        #expect(settled, "still accepted: \(ids.filter { state($0) == "accepted" }.sorted())")
        #expect(second.terminate() == 0)
    }
}
