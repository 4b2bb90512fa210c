import Backends
import Domain
import Foundation
import Testing

@testable import stovepipe

@Suite struct QueueConfigurationTests {
    @Test func parsesGitAndStaticQueues() throws {
        let document = #"""
            {"queues": [
              {"name": "monorepo/main", "source": {"type": "git", "repository": "/srv/git/monorepo", "ref": "refs/heads/main"}},
              {"name": "demo/main", "source": {"type": "static", "history": ["git://demo/main/c3", "git://demo/main/c2"]}}
            ]}
            """#
        let configuration = try QueueConfiguration.parse(Data(document.utf8))
        #expect(configuration.entries.map(\.name.rawValue) == ["monorepo/main", "demo/main"])
        #expect(configuration.entries[0].source == .git(repository: "/srv/git/monorepo", ref: "refs/heads/main"))
        #expect(configuration.entries[1].source == .staticHistory([SourceURI("git://demo/main/c3"), SourceURI("git://demo/main/c2")]))
    }

    @Test func keepsNonASCIIAndEscapedTextExactly() throws {
        let document = #"""
            {"queues": [
              {"name": "mono/main", "source": {"type": "git", "repository": "/srv/git/mön\u00f6", "ref": "refs\/heads\/q\u002dx"}},
              {"name": "demo/main", "source": {"type": "static", "history": ["git://demo/é/c2", "git://demo/\ud83d\ude00/c1"]}}
            ]}
            """#
        let configuration = try QueueConfiguration.parse(Data(document.utf8))
        #expect(configuration.entries[0].source == .git(repository: "/srv/git/mönö", ref: "refs/heads/q-x"))
        #expect(configuration.entries[1].source == .staticHistory([SourceURI("git://demo/é/c2"), SourceURI("git://demo/😀/c1")]))
    }

    @Test(arguments: [
        ("[]", "$"),
        ("{", "$"),
        (#"{"queues": {}}"#, "$.queues"),
        (#"{"queues": []}"#, "$.queues"),
        (#"{"queues": [1]}"#, "$.queues[0]"),
        (#"{"queues": [{"name": "a b", "source": {}}]}"#, "$.queues[0].name"),
        (#"{"queues": [{"name": "a", "source": {"type": "svn"}}]}"#, "$.queues[0].source.type"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "ref": "main"}}]}"#, "$.queues[0].source.repository"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r"}}]}"#, "$.queues[0].source.ref"),
        // Refs and repositories GitSourceControl refuses to hand to git: the queue could never be read.
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r", "ref": "--upload-pack=touch x"}}]}"#, "$.queues[0].source.ref"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r", "ref": "main..other"}}]}"#, "$.queues[0].source.ref"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r", "ref": "refs/heads/\"q\""}}]}"#, "$.queues[0].source.ref"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r", "ref": "HEAD"}}]}"#, "$.queues[0].source.ref"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "--upload-pack=touch x", "ref": "main"}}]}"#, "$.queues[0].source.repository"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "/r\u0000x", "ref": "main"}}]}"#, "$.queues[0].source.repository"),
        // Transports git is not allowed to use: every fetch would fail until the file is changed.
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "ext::sh -c touch% x", "ref": "main"}}]}"#, "$.queues[0].source.repository"),
        (#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "ftp://example.invalid/r.git", "ref": "main"}}]}"#, "$.queues[0].source.repository"),
        (#"{"queues": [{"name": "a", "source": {"type": "static", "history": []}}]}"#, "$.queues[0].source.history"),
        (#"{"queues": [{"name": "a", "source": {"type": "static", "history": [3]}}]}"#, "$.queues[0].source.history[0]"),
        (#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["x"]}}, {"name": "a", "source": {"type": "static", "history": ["x"]}}]}"#, "$.queues[1].name"),
    ])
    func namesTheProblemsPlace(_ document: String, _ place: String) {
        do {
            _ = try QueueConfiguration.parse(Data(document.utf8))
            Issue.record("accepted \(document)")
        } catch {
            #expect(error.place == place, "\(error)")
        }
    }

    @Test func sourcesWhoseURIsStoresCannotKeepAreRefused() throws {
        func document(repository: String, ref: String = "main") -> Data {
            Data(#"{"queues": [{"name": "a", "source": {"type": "git", "repository": "\#(repository)", "ref": "\#(ref)"}}]}"#.utf8)
        }
        // "git+" + repository + "#main@" + a 64-digit object id.
        let longest = SourceURI.maxLength - 4 - 6 - 64
        #expect(throws: Never.self) { try QueueConfiguration.parse(document(repository: "/" + String(repeating: "r", count: longest - 1))) }
        #expect {
            try QueueConfiguration.parse(document(repository: "/" + String(repeating: "r", count: longest)))
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.place == "$.queues[0].source"
        }

        let fits = String(repeating: "u", count: SourceURI.maxLength)
        #expect(throws: Never.self) {
            try QueueConfiguration.parse(Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["\#(fits)"]}}]}"#.utf8))
        }
        #expect {
            try QueueConfiguration.parse(Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["x", "\#(fits)u"]}}]}"#.utf8))
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.place == "$.queues[0].source.history[1]"
        }
        // MySQL's utf8mb4_bin ignores trailing spaces in comparisons: "c1 " would be deduplicated onto "c1".
        #expect {
            try QueueConfiguration.parse(Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["git://x/c1 "]}}]}"#.utf8))
        } throws: { error in
            let invalid = error as? QueueConfiguration.Invalid
            return invalid?.place == "$.queues[0].source.history[0]" && invalid?.problem == "ends in a space"
        }
        #expect(throws: Never.self) {
            try QueueConfiguration.parse(Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["git://x/a b"]}}]}"#.utf8))
        }
        // MySQL counts code points: 300 e + combining acute accent are 300 Swift characters but 600 scalars.
        let combining = "git://x/" + String(repeating: "e\u{301}", count: 300)
        #expect {
            try QueueConfiguration.parse(Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["\#(combining)"]}}]}"#.utf8))
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.place == "$.queues[0].source.history[0]"
        }
    }

    @Test func aFileBeyondTheLimitIsRefusedWithItsSizeBeforeItIsRead() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-queues-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let limit = 64 << 20
        // Sparse: the size is there without writing it.
        #expect(FileManager.default.createFile(atPath: path, contents: nil))
        #expect(truncate(path, off_t(limit + 1)) == 0)
        #expect {
            try QueueConfiguration.load(path: path)
        } throws: { error in
            let invalid = error as? QueueConfiguration.Invalid
            return invalid?.place == path && invalid?.problem == "is \(limit + 1) bytes; a queues file may have at most \(limit) bytes"
        }
    }

    @Test func aFileAtTheLimitIsReadAndOnePastItIsNot() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-queues-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let document = Data(#"{"queues": [{"name": "a", "source": {"type": "static", "history": ["x"]}}]}"#.utf8)
        try document.write(to: URL(fileURLWithPath: path))
        #expect(try QueueConfiguration.load(path: path, maxBytes: document.count).entries.count == 1)
        #expect {
            try QueueConfiguration.load(path: path, maxBytes: document.count - 1)
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.problem.hasPrefix("is \(document.count) bytes;") == true
        }
    }

    @Test func readingStopsAtTheLimitWhenTheFileHasNoSizeOrGrows() throws {
        // /dev/zero has size 0 and never ends: like a pipe, or a file that grows after its size was checked.
        #expect {
            try QueueConfiguration.load(path: "/dev/zero", maxBytes: 100_000)
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.problem == "has more than 100000 bytes; a queues file may have at most 100000 bytes"
        }
    }

    @Test func aMissingFileCannotBeRead() throws {
        #expect {
            try QueueConfiguration.load(path: "/nonexistent/\(UUID().uuidString).json")
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.problem == "cannot be read: No such file or directory"
        }
    }

    @Test func aDirectoryCannotBeReadAndSaysWhy() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: false)
        defer { try? FileManager.default.removeItem(at: directory) }
        #expect {
            try QueueConfiguration.load(path: directory.path)
        } throws: { error in
            (error as? QueueConfiguration.Invalid)?.problem == "cannot be read: Is a directory"
        }
    }

    @Test("a large queues file is read with a peak of memory a few times its size, not dozens")
    func aLargeFileIsReadInBoundedMemory() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-queues-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        // 100,000 static queues of six URIs: 20 MB, a third of the limit.
        var document = #"{"queues": ["#
        for queue in 0..<100_000 {
            if queue > 0 { document += "," }
            let history = (0..<6).map { #""git://big/q\#(queue)/c\#($0)""# }.joined(separator: ",")
            document += #"{"name": "big/q\#(queue)", "source": {"type": "static", "history": [\#(history)]}}"#
        }
        document += "]}"
        try Data(document.utf8).write(to: URL(fileURLWithPath: path))
        let server = try RunningServer(arguments: ["--queues", path])
        let status = try String(contentsOfFile: "/proc/\(server.process.processIdentifier)/status", encoding: .utf8)
        let peakLine = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") }
        let peakKiB = try #require(peakLine.flatMap { Int($0.split(separator: " ", omittingEmptySubsequences: true)[1]) })
        // The parsed document as Foundation objects took 36 times the file (743 MB here), enough to kill a server
        // with a memory limit near what it needs once running; decoded in place it takes a few times the file.
        #expect(peakKiB * 1024 < document.utf8.count * 12, "peak resident memory \(peakKiB) KiB for a file of \(document.utf8.count) bytes")
        #expect(server.terminate() == 0)
    }

    @Test func demoQueueIsValid() throws {
        #expect(try QueueConfiguration.demo().entries.map(\.name.rawValue) == ["demo/main"])
    }
}
