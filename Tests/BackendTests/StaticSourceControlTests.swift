import Backends
import Domain
import Testing

private let history = ["c5", "c4", "c3", "c2", "c1"].map { SourceURI("git://demo/main/\($0)") }

@Suite("StaticSourceControl")
struct StaticSourceControlTests {
    @Test("latest is the first URI; an empty history is notFound")
    func latest() throws {
        #expect(try StaticSourceControl(history).latest() == history[0])
        #expect(throws: BackendError.notFound) { try StaticSourceControl([]).latest() }
    }

    @Test("an older or equal URI is an ancestor; a newer one is not")
    func ancestry() throws {
        let source = StaticSourceControl(history)
        #expect(try source.isAncestor(history[4], of: history[0]))
        #expect(try source.isAncestor(history[2], of: history[2]))
        #expect(try source.isAncestor(history[3], of: history[1]))
        #expect(try !source.isAncestor(history[0], of: history[4]))
        #expect(try !source.isAncestor(history[1], of: history[2]))
    }

    @Test("a URI outside the history is notFound on either side")
    func unknownURI() {
        let source = StaticSourceControl(history)
        let stranger = SourceURI("git://demo/main/c9")
        #expect(throws: BackendError.notFound) { try source.isAncestor(stranger, of: history[0]) }
        #expect(throws: BackendError.notFound) { try source.isAncestor(history[0], of: stranger) }
    }

    @Test("history pages through the list and ends with an empty cursor")
    func paging() throws {
        let source = StaticSourceControl(history)
        let first = try source.history(cursor: "", limit: 2)
        #expect(first.uris == Array(history[0..<2]))
        let second = try source.history(cursor: first.nextCursor, limit: 2)
        #expect(second.uris == Array(history[2..<4]))
        let third = try source.history(cursor: second.nextCursor, limit: 2)
        #expect(third == HistoryPage(uris: [history[4]], nextCursor: ""))
        #expect(try source.history(cursor: "", limit: 5) == HistoryPage(uris: history, nextCursor: ""))
        #expect(try source.history(cursor: "", limit: 50) == HistoryPage(uris: history, nextCursor: ""))
        #expect(try StaticSourceControl([]).history(cursor: "", limit: 5) == HistoryPage(uris: [], nextCursor: ""))
    }

    @Test("a limit below 1 still makes progress, one URI a page")
    func smallLimit() throws {
        let page = try StaticSourceControl(history).history(cursor: "", limit: 0)
        #expect(page.uris == [history[0]])
        #expect(!page.nextCursor.isEmpty)
    }

    @Test("a limit as large as Int.max returns the rest of the history from any cursor instead of trapping")
    func hugeLimit() throws {
        let source = StaticSourceControl(history)
        let first = try source.history(cursor: "", limit: 2)
        #expect(try source.history(cursor: first.nextCursor, limit: .max) == HistoryPage(uris: Array(history[2...]), nextCursor: ""))
    }

    @Test("cursors it never mints are notFound", arguments: ["x", "-1", "+1", "01", "0", "5", "99", " 1", "1 ", "1.0", "99999999999999999999999"])
    func garbledCursor(_ cursor: String) {
        #expect(throws: BackendError.notFound) { try StaticSourceControl(history).history(cursor: cursor, limit: 2) }
    }
}

@Suite("SourceControlRegistry")
struct SourceControlRegistryTests {
    @Test("each configured queue gets its backend; an unknown queue is notFound")
    func lookup() throws {
        let registry = SourceControlRegistry(
            [
                try QueueName("demo/main"): .staticHistory(history),
                try QueueName("repo/main"): .git(repository: "/nonexistent/repo", ref: "main"),
            ],
            logger: silentLogger
        )
        #expect(try registry.sourceControl(for: QueueName("demo/main")).latest() == history[0])
        let git = try registry.sourceControl(for: QueueName("repo/main"))
        #expect(git is GitSourceControl)
        #expect(throws: BackendError.notFound) { try git.latest() }
        #expect(throws: BackendError.notFound) { try registry.sourceControl(for: QueueName("other/main")) }
    }

    /// A reload adds queues; a known queue keeps its SourceControl (its mirror), removed from the file or not, and may
    /// not change source.
    @Test func addingKeepsKnownQueuesAndRefusesAChangedSource() throws {
        let (kept, added) = (try QueueName("kept/main"), try QueueName("added/main"))
        let git = SourceConfig.git(repository: "/srv/git/app", ref: "refs/heads/main")
        let history = SourceConfig.staticHistory([SourceURI("git://h/c1")])
        let registry = SourceControlRegistry([kept: git], logger: silentLogger)
        let grown = try registry.adding([(added, history)])
        let keptControl = try registry.sourceControl(for: kept) as? GitSourceControl
        #expect(keptControl != nil)
        #expect(try grown.sourceControl(for: kept) as? GitSourceControl === keptControl)
        #expect(try grown.sourceControl(for: added).latest() == SourceURI("git://h/c1"))
        #expect(throws: BackendError.notFound) { try registry.sourceControl(for: added) }
        let again = try grown.adding([(added, history)])
        #expect(try again.sourceControl(for: kept) as? GitSourceControl === keptControl, "removed from the file, still kept")

        for (changed, words) in [
            (SourceConfig.git(repository: "/srv/git/other", ref: "refs/heads/main"), "its repository"),
            (.git(repository: "/srv/git/app", ref: "refs/heads/next"), "its ref"),
            (.staticHistory([SourceURI("git://h/c1")]), "git to static"),
        ] {
            #expect {
                try grown.adding([(added, history), (kept, changed)])
            } throws: { error in
                (error as? SourceControlRegistry.SourceChanged)?.description.hasPrefix("queue 'kept/main': its source changed (\(words))")
                    == true
            }
        }
    }
}
