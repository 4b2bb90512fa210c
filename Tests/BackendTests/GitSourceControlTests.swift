@testable import Backends
import Domain
import Foundation
import Logging
import Synchronization
import TestSupport
import Testing

private func source(_ repository: ScratchRepository, ref: String = "main", cache: String? = nil) -> GitSourceControl {
    GitSourceControl(
        repository: repository.path, ref: ref, cacheDirectory: cache ?? NSTemporaryDirectory(), logger: silentLogger
    )
}

private func uri(_ repository: String, _ ref: String, _ id: String) -> SourceURI {
    SourceURI("git+\(repository)#\(ref)@\(id)")
}

/// The real git, which the wrapper scripts below run.
private let realGit = ["/usr/bin/git", "/usr/local/bin/git", "/bin/git"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "git"

/// A script standing in for git that leaves a marker file when it runs, to prove when git is never run.
private struct MarkerGit {
    let directory: String
    var marker: String { directory + "/ran" }
    var executable: String { directory + "/fake-git" }

    init(body: String = "exit 1") throws {
        directory = try makeScratchDirectory("fake-git")
        try WrappedGit.install("#!/bin/sh\ntouch '\(directory)/ran'\n\(body)\n", at: executable, in: directory)
    }

    var ran: Bool { FileManager.default.fileExists(atPath: marker) }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A git that counts its fetches in a file and runs `onFetch` (shell) before each; everything else is the real git.
private struct FetchCountingGit {
    let directory: String
    var executable: String { directory + "/git" }

    init(onFetch: String) throws {
        directory = try makeScratchDirectory("counting-git")
        let script = """
            #!/bin/sh
            # GitRunner runs `git -c <option> -c <option> -C <directory> <command> ...`.
            if [ "$7" = fetch ]; then echo fetch >> '\(directory)/fetches'; \(onFetch); fi
            exec '\(realGit)' "$@"

            """
        try WrappedGit.install(script, at: executable, in: directory)
    }

    var fetches: Int {
        ((try? String(contentsOfFile: directory + "/fetches", encoding: .utf8)) ?? "").split(separator: "\n").count
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// A git whose script runs `prelude` (shell, with git's arguments as "$@") before the real git.
private struct WrappedGit {
    let directory: String
    var executable: String { directory + "/git" }

    init(prelude: String) throws {
        directory = try makeScratchDirectory("wrapped-git")
        try Self.install("#!/bin/sh\n\(prelude)\nexec '\(realGit)' \"$@\"\n", at: executable, in: directory)
    }

    /// Writes an executable script by cp, not by this process: a descriptor of ours open for writing could be
    /// inherited by a process another test forks at that moment, and exec would then fail (ETXTBSY).
    static func install(_ script: String, at path: String, in directory: String) throws {
        let text = directory + "/script-\(UUID().uuidString).txt"
        try Data(script.utf8).write(to: URL(fileURLWithPath: text))
        let copy = Process()
        copy.executableURL = URL(fileURLWithPath: "/bin/cp")
        copy.arguments = [text, path]
        try copy.run()
        copy.waitUntilExit()
        try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: path)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Whether process `pid` exists and is not a zombie.
private func isRunning(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return false }
    return !stat[stat.index(after: close)...].hasPrefix(" Z")
}

/// A remote mirrored once, whose mirror keeps every fetch's pack and finds two packs too many, so that the next fetch
/// makes `gc --auto` repack; its `pre-auto-gc` hook records whether the mirror's lock is held whenever gc runs.
private struct HousekeepingSetup {
    let upstream: ScratchRepository
    let cache: String
    /// A second path to the cache directory, as another replica has: an instance using it keeps its own schedule.
    let alias: String
    let mirror: String
    let scratch: String

    init() throws {
        upstream = try ScratchRepository()
        cache = try makeScratchDirectory("cache")
        alias = cache + "-alias"
        scratch = try makeScratchDirectory("gc-hook")
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: cache)
        try upstream.commit("one")
        _ = try GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger).latest()
        let name = try #require(FileManager.default.contentsOfDirectory(atPath: cache).first { $0.hasSuffix(".git") })
        mirror = cache + "/" + name
        for (key, value) in [("gc.auto", "1"), ("gc.autoPackLimit", "1"), ("transfer.unpackLimit", "1")] {
            try runGit(["-C", mirror, "config", key, value])
        }
        try runGit(["-C", mirror, "repack", "-d", "-q"])
        try FileManager.default.createDirectory(atPath: mirror + "/objects/info", withIntermediateDirectories: true)
        try WrappedGit.install(
            "#!/bin/sh\nif flock -n '\(mirror).lock' true; then echo unlocked; else echo locked; fi >> '\(scratch)/runs'\n",
            at: mirror + "/hooks/pre-auto-gc", in: scratch)
    }

    /// A source reading the mirror through `alias`, whose housekeeping runs `runs` records (true: succeeded).
    func source(logger: Logger, runs: Recorder<Bool>) -> GitSourceControl {
        GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: alias, logger: logger, onHousekeeping: { runs.append($0) })
    }

    /// One line per gc run so far: whether the mirror's lock was held (`locked`) or not.
    var gcRuns: [String] {
        ((try? String(contentsOfFile: scratch + "/runs", encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }

    /// The mirror's pack files.
    func packs() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: mirror + "/objects/pack").filter { $0.hasSuffix(".pack") }.count
    }

    func remove() {
        upstream.remove()
        for path in [alias, cache, scratch] { try? FileManager.default.removeItem(atPath: path) }
    }
}

/// The processes (pids) whose working directory is `directory`.
private func processes(workingIn directory: String) -> [String] {
    guard let resolved = realpath(directory, nil) else { return [] }
    let target = String(cString: resolved)
    free(resolved)
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.filter { Int32($0) != nil }.filter { pid in
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) == target
    }
}

@Suite("GitSourceControl on a local repository")
struct GitSourceControlLocalTests {
    @Test("latest is the commit the ref points at now, as git+<repo>#<ref>@<sha>")
    func latestFollowsCommits() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let first = try repository.commit("one")
        let git = source(repository)
        #expect(try git.latest() == uri(repository.path, "main", first))
        let second = try repository.commit("two")
        #expect(try git.latest() == uri(repository.path, "main", second))
    }

    @Test("a full ref name works the same as the branch name")
    func fullRefName() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let head = try repository.commit("one")
        #expect(try source(repository, ref: "refs/heads/main").latest() == uri(repository.path, "refs/heads/main", head))
    }

    @Test("ancestry: older of newer and equal are true; newer of older and a side branch are false")
    func ancestry() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let first = try repository.commit("one")
        try repository.git("branch", "side")
        let second = try repository.commit("two")
        try repository.git("checkout", "--quiet", "side")
        let sideCommit = try repository.commit("side")
        let git = source(repository)
        let a = uri(repository.path, "main", first)
        let b = uri(repository.path, "main", second)
        let s = uri(repository.path, "main", sideCommit)
        #expect(try git.isAncestor(a, of: b))
        #expect(try git.isAncestor(b, of: b))
        #expect(try !git.isAncestor(b, of: a))
        #expect(try !git.isAncestor(s, of: b))
        #expect(try git.isAncestor(a, of: s))
    }

    @Test("history pages follow first parents newest first, and a cursor is stable when the ref moves")
    func historyPaging() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        var ids: [String] = []
        for index in 1...7 { ids.append(try repository.commit("c\(index)")) }
        let expected = ids.reversed().map { uri(repository.path, "main", $0) }
        let git = source(repository)

        let page1 = try git.history(cursor: "", limit: 3)
        #expect(page1.uris == Array(expected[0..<3]))
        #expect(!page1.nextCursor.isEmpty)

        // The ref moves between pages; the next page still continues where the first ended.
        try repository.commit("c8")
        try repository.commit("c9")
        let page2 = try git.history(cursor: page1.nextCursor, limit: 3)
        #expect(page2.uris == Array(expected[3..<6]))
        let page3 = try git.history(cursor: page2.nextCursor, limit: 3)
        #expect(page3.uris == Array(expected[6..<7]))
        #expect(page3.nextCursor == "")

        let exact = try git.history(cursor: page2.nextCursor, limit: 1)
        #expect(exact.uris == Array(expected[6..<7]))
        #expect(exact.nextCursor == "")
        #expect(try git.history(cursor: "", limit: 100).uris.count == 9)
    }

    @Test("history follows first parents only: merged side commits are not listed")
    func historyFirstParent() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let base = try repository.commit("base")
        try repository.git("checkout", "--quiet", "-b", "feature")
        let feature = try repository.commit("feature")
        try repository.git("checkout", "--quiet", "main")
        let mainline = try repository.commit("mainline")
        try repository.git("merge", "--quiet", "--no-ff", "--no-edit", "feature")
        let merge = try repository.git("rev-parse", "HEAD")
        let git = source(repository)
        let page = try git.history(cursor: "", limit: 10)
        #expect(page.uris == [merge, mainline, base].map { uri(repository.path, "main", $0) })
        #expect(try git.isAncestor(uri(repository.path, "main", feature), of: uri(repository.path, "main", merge)))
    }

    @Test("after a force push to a new root the old head is no longer an ancestor")
    func forcePush() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let oldHead = try repository.commit("two")
        let emptyTree = try repository.git("mktree")
        let newRoot = try repository.git("commit-tree", emptyTree, "-m", "new root")
        try repository.git("update-ref", "refs/heads/main", newRoot)
        let git = source(repository)
        let newURI = try git.latest()
        #expect(newURI == uri(repository.path, "main", newRoot))
        #expect(try !git.isAncestor(uri(repository.path, "main", oldHead), of: newURI))
        #expect(try git.history(cursor: "", limit: 10).uris == [newURI])
    }

    @Test("an unknown ref is notFound")
    func unknownRef() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        #expect(throws: BackendError.notFound) { try source(repository, ref: "nope").latest() }
        #expect(throws: BackendError.notFound) { try source(repository, ref: "refs/heads/nope").history(cursor: "", limit: 5) }
    }

    @Test("a well-formed URI of a commit the repository lacks is notFound")
    func unknownCommit() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let head = try repository.commit("one")
        let git = source(repository)
        let ghost = uri(repository.path, "main", String(repeating: "ab", count: 20))
        #expect(throws: BackendError.notFound) { try git.isAncestor(ghost, of: uri(repository.path, "main", head)) }
        #expect(throws: BackendError.notFound) { try git.isAncestor(uri(repository.path, "main", head), of: ghost) }
        #expect(throws: BackendError.notFound) { try git.history(cursor: String(repeating: "ab", count: 20), limit: 5) }
    }

    @Test("URIs of another repository or ref, and malformed URIs, are notFound")
    func foreignURIs() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let head = try repository.commit("one")
        let git = source(repository)
        let own = uri(repository.path, "main", head)
        let foreign = [
            "git+/elsewhere#main@\(head)", "git+\(repository.path)#other@\(head)", "\(repository.path)#main@\(head)",
            "git+\(repository.path)#main@", "git+\(repository.path)#main@\(head)0",
            "git+\(repository.path)#main@\(head.uppercased())", "git+\(repository.path)#main@\(head.prefix(12))",
            "git+\(repository.path)#main@\(head) ", "",
        ]
        for text in foreign {
            #expect(throws: BackendError.notFound, "\(text)") { try git.isAncestor(SourceURI(text), of: own) }
            #expect(throws: BackendError.notFound, "\(text)") { try git.isAncestor(own, of: SourceURI(text)) }
        }
        #expect(try git.isAncestor(own, of: own))
    }

    @Test("garbled history cursors are notFound", arguments: ["x", "0", "-1", "--all", "HEAD", "main"])
    func garbledCursor(_ cursor: String) throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        #expect(throws: BackendError.notFound) { try source(repository).history(cursor: cursor, limit: 5) }
    }

    @Test("a repository path that does not exist is notFound")
    func missingRepository() throws {
        let git = GitSourceControl(repository: "/nonexistent/\(UUID().uuidString)", ref: "main", logger: silentLogger)
        #expect(throws: BackendError.notFound) { try git.latest() }
    }

    @Test("a repository path that is a regular file is notFound, like any other path that is no repository")
    func fileRepository() throws {
        let scratch = try makeScratchDirectory("plain")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let file = scratch + "/repo.git"
        try Data("not a repository".utf8).write(to: URL(fileURLWithPath: file))
        #expect(throws: BackendError.notFound) {
            try GitSourceControl(repository: file, ref: "main", logger: silentLogger).latest()
        }
    }

    @Test("a directory that is not itself a repository is notFound, even inside one")
    func notARepository() throws {
        let plain = try makeScratchDirectory("plain")
        defer { try? FileManager.default.removeItem(atPath: plain) }
        #expect(throws: BackendError.notFound) {
            try GitSourceControl(repository: plain, ref: "main", logger: silentLogger).latest()
        }

        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let inside = repository.path + "/sub"
        try FileManager.default.createDirectory(atPath: inside, withIntermediateDirectories: true)
        #expect(throws: BackendError.notFound) {
            try GitSourceControl(repository: inside, ref: "main", logger: silentLogger).latest()
        }
    }

    @Test("a symlink to a directory inside a repository is notFound, like that directory")
    func symlinkIntoARepository() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        let inside = repository.path + "/sub"
        try FileManager.default.createDirectory(atPath: inside, withIntermediateDirectories: true)
        let links = try makeScratchDirectory("links")
        defer { try? FileManager.default.removeItem(atPath: links) }
        try FileManager.default.createSymbolicLink(atPath: links + "/sub", withDestinationPath: inside)
        #expect(throws: BackendError.notFound) {
            try GitSourceControl(repository: links + "/sub", ref: "main", logger: silentLogger).latest()
        }
    }

    // Only root can hand the repository to another user; CI runs as root.
    @Test("a repository another user owns is a final error that names safe.directory", .enabled(if: getuid() == 0))
    func repositoryOwnedByAnotherUser() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        try repository.commit("one")
        try #require(chown(repository.path, 12345, 12345) == 0)
        let git = GitSourceControl(repository: repository.path, ref: "main", logger: silentLogger)
        #expect {
            try git.latest()
        } throws: { error in
            guard case BackendError.unavailable(let retryable, let detail) = error else { return false }
            return !retryable && detail.contains("safe.directory")
        }
    }

    @Test("a ref that looks like an option is rejected without running git", arguments: ["--upload-pack=x", "-c", "main..other"])
    func maliciousRefRunsNothing(_ ref: String) throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let head = try repository.commit("one")
        let fake = try MarkerGit()
        defer { fake.remove() }
        for repositoryText in [repository.path, repository.fileURL] {
            let git = GitSourceControl(repository: repositoryText, ref: ref, gitExecutable: fake.executable, logger: silentLogger)
            #expect(throws: BackendError.notFound) { try git.latest() }
            #expect(throws: BackendError.notFound) { try git.history(cursor: "", limit: 5) }
            let known = uri(repositoryText, ref, head)
            #expect(throws: BackendError.notFound) { try git.isAncestor(known, of: known) }
        }
        #expect(!fake.ran)

        // The marker does appear when the fake git is run, so its absence above means something.
        _ = try? GitSourceControl(repository: repository.path, ref: "main", gitExecutable: fake.executable, logger: silentLogger).latest()
        #expect(fake.ran)
    }

    @Test("a repository that looks like an option is rejected without running git")
    func maliciousRepositoryRunsNothing() throws {
        let fake = try MarkerGit()
        defer { fake.remove() }
        let git = GitSourceControl(repository: "--upload-pack=touch /tmp/x", ref: "main", gitExecutable: fake.executable, logger: silentLogger)
        #expect(throws: BackendError.notFound) { try git.latest() }
        #expect(!fake.ran)
    }

    @Test("git that outlives the timeout is stopped and the call is retryable unavailable")
    func timeout() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let stuck = try MarkerGit(body: "exec sleep 30")
        defer { stuck.remove() }
        let git = GitSourceControl(
            repository: repository.path, ref: "main", timeout: .milliseconds(200), gitExecutable: stuck.executable,
            logger: silentLogger
        )
        #expect {
            try git.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
    }

    @Test("a git executable that cannot start is unavailable, and not worth retrying when it does not exist")
    func gitMissing() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let git = GitSourceControl(repository: repository.path, ref: "main", gitExecutable: "/nonexistent/git", logger: silentLogger)
        #expect {
            try git.latest()
        } throws: { error in
            if case .unavailable(retryable: false, _) = error as? BackendError { return true }
            return false
        }
    }
}

@Suite("GitSourceControl on a remote through its mirror")
struct GitSourceControlRemoteTests {
    @Test("a file:// remote is mirrored: latest fetches, ancestry and history work, new commits arrive")
    func mirror() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let first = try upstream.commit("one")
        let git = GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger)

        #expect(try git.latest() == uri(upstream.fileURL, "main", first))
        // The mirror, and the lock file beside it that processes sharing the cache directory take turns with.
        let mirrors = try FileManager.default.contentsOfDirectory(atPath: cache).sorted()
        #expect(mirrors.count == 2)
        #expect(mirrors.first?.hasSuffix(".git") == true)
        #expect(mirrors.last == mirrors.first.map { $0 + ".lock" })

        let second = try upstream.commit("two")
        #expect(try git.latest() == uri(upstream.fileURL, "main", second))
        #expect(try git.isAncestor(uri(upstream.fileURL, "main", first), of: uri(upstream.fileURL, "main", second)))
        #expect(try git.history(cursor: "", limit: 10).uris == [second, first].map { uri(upstream.fileURL, "main", $0) })
    }

    @Test("a ref lock file a killed git left behind is removed once it is stale; a fresh one is left to its owner")
    func staleRefLock() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        _ = try upstream.commit("one")
        let git = GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger)
        _ = try git.latest()
        let mirror = try cache + "/" + #require(FileManager.default.contentsOfDirectory(atPath: cache).first { $0.hasSuffix(".git") })
        let lock = mirror + "/refs/heads/main.lock"
        #expect(FileManager.default.createFile(atPath: lock, contents: nil))

        let second = try upstream.commit("two")
        // A lock as a git still running holds it: git refuses the fetch, and it is not taken away.
        #expect {
            try git.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
        #expect(FileManager.default.fileExists(atPath: lock))

        // Ten minutes old: no git this service runs lives that long.
        try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-600)], ofItemAtPath: lock)
        #expect(try git.latest() == uri(upstream.fileURL, "main", second))
        #expect(!FileManager.default.fileExists(atPath: lock))
    }

    @Test("a branch deleted upstream and replaced by one nested under its name (or the reverse) is fetched, though the mirror still holds the old one")
    func staleConflictingRefInMirror() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let first = try upstream.commit("one")
        try upstream.git("branch", "release")
        let release = GitSourceControl(repository: upstream.fileURL, ref: "release", cacheDirectory: cache, logger: silentLogger)
        let nested = GitSourceControl(repository: upstream.fileURL, ref: "release/1.0", cacheDirectory: cache, logger: silentLogger)
        #expect(try release.latest() == uri(upstream.fileURL, "release", first))

        // refs/heads/release stays in the mirror, and git cannot write refs/heads/release/1.0 beside it.
        try upstream.git("branch", "-D", "release")
        try upstream.git("branch", "release/1.0")
        #expect(try nested.latest() == uri(upstream.fileURL, "release/1.0", first))
        #expect(throws: BackendError.notFound) { try release.latest() }

        try upstream.git("branch", "-D", "release/1.0")
        let second = try upstream.commit("two")
        try upstream.git("branch", "release")
        #expect(try release.latest() == uri(upstream.fileURL, "release", second))
        #expect(try release.isAncestor(uri(upstream.fileURL, "release", first), of: uri(upstream.fileURL, "release", second)))
    }

    @Test("a commit made upstream after the last fetch is fetched once for isAncestor and history")
    func fetchOnMissingCommit() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let first = try upstream.commit("one")
        let git = GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger)
        _ = try git.latest()

        let second = try upstream.commit("two")
        let third = try upstream.commit("three")
        #expect(try git.isAncestor(uri(upstream.fileURL, "main", first), of: uri(upstream.fileURL, "main", second)))
        #expect(try git.history(cursor: third, limit: 1).uris == [uri(upstream.fileURL, "main", third)])
        let ghost = uri(upstream.fileURL, "main", String(repeating: "cd", count: 20))
        #expect(throws: BackendError.notFound) { try git.isAncestor(ghost, of: uri(upstream.fileURL, "main", first)) }
    }

    @Test("an unknown remote ref or a remote repository that does not exist is notFound; an unreachable remote is retryable unavailable")
    func remoteFailures() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        try upstream.commit("one")
        let unknownRef = GitSourceControl(repository: upstream.fileURL, ref: "nope", cacheDirectory: cache, logger: silentLogger)
        #expect(throws: BackendError.notFound) { try unknownRef.latest() }

        // The server answers 404 to the right credentials: git's "repository '…' not found".
        let server = try BasicAuthServer(user: "deploy", password: "pw")
        defer { server.stop() }
        for missing in ["file:///nonexistent/\(UUID().uuidString)", "http://deploy:pw@127.0.0.1:\(server.port)/r.git"] {
            let source = GitSourceControl(repository: missing, ref: "main", cacheDirectory: cache, logger: silentLogger)
            #expect(throws: BackendError.notFound, "\(missing)") { try source.latest() }
        }

        // Port 1 on loopback: nothing listens, the connection is refused.
        let unreachable = GitSourceControl(
            repository: "http://127.0.0.1:1/r.git", ref: "main", cacheDirectory: cache, logger: silentLogger
        )
        #expect {
            try unreachable.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
    }

    @Test("addresses git reads as scp-like ssh ([user@]host:path, no '/' before the first ':') are mirrored and fetched; paths are not", arguments: [
        ("deploy@host.example:org/repo.git", true), ("host.example:org/repo.git", true), ("git@host.example:repo.git", true),
        ("[::1]:repo.git", true), ("ssh://deploy@host.example/org/repo.git", true),
        ("./no/such/dir:with-colon", false), ("no/such/dir:with-colon", false), ("no-such-repository", false), ("C:/no/such/repository", false),
    ])
    func scpLikeAddressesAreRemote(_ address: String, _ remote: Bool) throws {
        // Fetches fail at once: no ssh connection is tried, only the address git was given is recorded.
        let git = try FetchCountingGit(onFetch: #"printf '%s\n' "${12}" >> "$(dirname "$0")/urls"; exit 128"#)
        defer { git.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let source = GitSourceControl(
            repository: address, ref: "main", cacheDirectory: cache, gitExecutable: git.executable, logger: silentLogger)
        #expect {
            try source.latest()
        } throws: { error in
            switch error as? BackendError {
            case .unavailable?: return remote
            case .notFound?: return !remote
            default: return false
            }
        }
        let urls = (try? String(contentsOfFile: git.directory + "/urls", encoding: .utf8)) ?? ""
        #expect(urls == (remote ? address + "\n" : ""), "fetched: \(urls)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasSuffix(".git") }.count == (remote ? 1 : 0), "a mirror only for a remote")
    }

    @Test("callers queued behind a fetch share the next fetch instead of fetching in turn")
    func queuedCallersShareOneFetch() async throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let head = try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let git = try FetchCountingGit(onFetch: "sleep 2")
        defer { git.remove() }
        let source = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, gitExecutable: git.executable, logger: silentLogger)
        let results = Mutex<[Result<SourceURI, BackendError>]>([])
        let callLatest = {
            Thread.detachNewThread {
                let result = Result { () throws(BackendError) in try source.latest() }
                results.withLock { $0.append(result) }
            }
        }

        callLatest()
        #expect(await eventually { git.fetches == 1 })
        // Both arrive while the first fetch runs: one of them fetches next, and the other uses that fetch.
        callLatest()
        callLatest()
        #expect(await eventually { results.withLock { $0.count } == 3 })
        for result in results.withLock({ $0 }) {
            #expect(try result.get() == uri(upstream.fileURL, "main", head))
        }
        #expect(git.fetches == 2)
    }

    @Test("a caller waits for a stuck fetch of the same repository at most the git timeout")
    func waitForAStuckFetchIsBounded() async throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // The stuck fetch ignores SIGTERM, so it holds the mirror for the timeout plus the runner's grace
        // period before SIGKILL: longer than a caller arriving just after it may wait.
        let git = try FetchCountingGit(onFetch: "trap '' TERM; sleep 9; exit 1")
        defer { git.remove() }
        let source = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, timeout: .seconds(3),
            gitExecutable: git.executable, logger: silentLogger)
        let first = Mutex<Result<SourceURI, BackendError>?>(nil)
        Thread.detachNewThread {
            let result = Result { () throws(BackendError) in try source.latest() }
            first.withLock { $0 = result }
        }
        #expect(await eventually { git.fetches == 1 })

        // Unbounded, the wait would last until the stuck fetch is killed, and then this caller's own fetch
        // would time out: a different error, and a second fetch.
        #expect {
            try source.latest()
        } throws: { error in
            guard case .unavailable(let retryable, let detail) = error as? BackendError else { return false }
            return retryable && detail.contains("still running")
        }
        #expect(git.fetches == 1, "the waiting caller ran no fetch of its own")
        #expect(await eventually { first.withLock { $0 } != nil })
    }

    @Test("a fetch that times out stops git's children too, not only git")
    func timeoutStopsChildren() async throws {
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // ssh that hangs, as on a stalled network; git leaves it running when it is itself terminated.
        let git = try WrappedGit(prelude: "GIT_SSH_COMMAND=\"$(dirname \"$0\")/ssh\"; export GIT_SSH_COMMAND")
        defer { git.remove() }
        let pidFile = git.directory + "/ssh.pid"
        try WrappedGit.install("#!/bin/sh\necho $$ > '\(pidFile)'\nexec sleep 30\n", at: git.directory + "/ssh", in: git.directory)
        let source = GitSourceControl(
            repository: "ssh://example.invalid/r.git", ref: "main", cacheDirectory: cache, timeout: .seconds(2),
            gitExecutable: git.executable, logger: silentLogger)
        #expect {
            try source.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
        let text = try String(contentsOfFile: pidFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let pid = try #require(Int32(text))
        defer { if isRunning(pid) { kill(pid, SIGKILL) } }
        #expect(await eventually(timeout: .seconds(5)) { !isRunning(pid) }, "ssh outlived the timed-out fetch")
    }

    @Test("git's automatic gc after a fetch is not detached: it runs in the call under the mirror's lock, and a gc that fails leaves no gc.log and fails no call")
    func automaticGCIsNotDetached() async throws {
        let setup = try HousekeepingSetup()
        defer { setup.remove() }
        // gc's last step, writing the commit-graph, fails on a lock it finds taken: a detached gc writes that to gc.log.
        #expect(FileManager.default.createFile(atPath: setup.mirror + "/objects/info/commit-graph.lock", contents: nil))
        let head = try setup.upstream.commit("two")
        let lines = Recorder<String>()
        let runs = Recorder<Bool>()
        let git = setup.source(logger: Logger(label: "git") { _ in LineRecorder(lines: lines, logLevel: .debug) }, runs: runs)

        #expect(try git.latest() == uri(setup.upstream.fileURL, "main", head))
        // A detached gc works on in the mirror after the call; once nothing does, whatever ran there has finished.
        #expect(await eventually { processes(workingIn: setup.mirror).isEmpty })
        #expect(!FileManager.default.fileExists(atPath: setup.mirror + "/gc.log"), "gc ran detached, outside the call's lock and timeout")
        #expect(setup.gcRuns == ["locked"])
        #expect(lines.values.contains { $0.hasPrefix("git housekeeping failed") }, "\(lines.values)")
        #expect(runs.values == [false])
    }

    @Test("housekeeping after a fetch repacks a mirror that needs it before the call returns, at most once per mirror per interval")
    func housekeepingRepacksAtABoundedRate() throws {
        let setup = try HousekeepingSetup()
        defer { setup.remove() }
        let runs = Recorder<Bool>()
        let git = setup.source(logger: silentLogger, runs: runs)

        let second = try setup.upstream.commit("two")
        #expect(try git.latest() == uri(setup.upstream.fileURL, "main", second))
        #expect(try setup.packs() == 1, "the two packs were not repacked into one")
        #expect(setup.gcRuns == ["locked"])
        #expect(runs.values == [true])

        // Another fetch soon after leaves the repacking to a later one.
        let third = try setup.upstream.commit("three")
        #expect(try git.latest() == uri(setup.upstream.fileURL, "main", third))
        #expect(try setup.packs() == 2)
        #expect(setup.gcRuns == ["locked"])
        #expect(runs.values == [true])
    }

    @Test("what a remote prints, which git relays as `remote:` lines, does not steer how a failed fetch is classified", arguments: [
        "couldn't find remote ref refs/heads/main", "fatal: repository 'x' not found",
        "fatal: 'x' does not appear to be a git repository", "fatal: not a git repository",
        "fatal: detected dubious ownership in repository at 'x'", "fatal: transport 'ext' not allowed",
    ])
    func remoteMessagesDoNotSteerClassification(_ phrase: String) throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // upload-pack runs this instead of pack-objects (uploadpack.packObjectsHook, honoured from the global
        // configuration only): it prints `phrase`, which git relays over the side band, and fails. Protocol v0 relays
        // it even to a quiet fetch.
        let git = try WrappedGit(prelude: #"GIT_CONFIG_GLOBAL="$(dirname "$0")/config"; export GIT_CONFIG_GLOBAL"#)
        defer { git.remove() }
        try Data(phrase.utf8).write(to: URL(fileURLWithPath: git.directory + "/phrase"))
        try WrappedGit.install(
            "#!/bin/sh\ncat '\(git.directory)/phrase' >&2\necho >&2\nexit 1\n", at: git.directory + "/pack-objects", in: git.directory)
        try Data("[uploadpack]\n\tpackObjectsHook = \(git.directory)/pack-objects\n[protocol]\n\tversion = 0\n".utf8)
            .write(to: URL(fileURLWithPath: git.directory + "/config"))
        let source = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, gitExecutable: git.executable, logger: silentLogger)

        #expect {
            try source.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
    }

    @Test("a missing ref or repository is told by git's own message, not by a remote's words in it (`fatal: remote error:`)")
    func missingOnRemoteReadsGitsOwnMessages() {
        #expect(GitSourceControl.isMissingOnRemote("fatal: couldn't find remote ref refs/heads/nope\n"))
        #expect(GitSourceControl.isMissingOnRemote(
            "fatal: '/srv/x' does not appear to be a git repository\nfatal: Could not read from remote repository.\n"))
        #expect(GitSourceControl.isMissingOnRemote("fatal: repository 'https://git.example.com/x/' not found\n"))
        #expect(!GitSourceControl.isMissingOnRemote("fatal: remote error: couldn't find remote ref refs/heads/main\n"))
        #expect(!GitSourceControl.isMissingOnRemote("fatal: remote error: repository 'x' not found\n"))
        #expect(!GitSourceControl.isMissingOnRemote("remote: fatal: couldn't find remote ref refs/heads/main\rfatal: early EOF\n"))
    }

    @Test("two instances reaching one cache directory by different paths, as replicas sharing a volume do, never fetch into a mirror at once")
    func replicasSharingACacheSerialiseFetches() async throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let head = try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // A second path to the same directory: each instance's in-process gate is keyed by its own path, so only a
        // lock in the file system can keep them apart, as it must for two processes.
        let alias = cache + "-alias"
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: cache)
        defer { try? FileManager.default.removeItem(atPath: alias) }
        // A fetch marks itself in flight for a while before git runs; one that finds the mark taken overlaps another.
        let git = try FetchCountingGit(onFetch: #"""
            d="$(dirname "$0")"; mkdir "$d/inflight" 2>/dev/null || echo overlap >> "$d/overlaps"; sleep 2; rmdir "$d/inflight"
            """#)
        defer { git.remove() }
        let replicas = [cache, alias].map { directory in
            GitSourceControl(
                repository: upstream.fileURL, ref: "main", cacheDirectory: directory, timeout: .seconds(30),
                gitExecutable: git.executable, logger: silentLogger)
        }
        let results = Mutex<[Result<SourceURI, BackendError>]>([])
        let callLatest = { (source: GitSourceControl) in
            Thread.detachNewThread {
                let result = Result { () throws(BackendError) in try source.latest() }
                results.withLock { $0.append(result) }
            }
        }
        callLatest(replicas[0])
        #expect(await eventually { git.fetches == 1 })
        callLatest(replicas[1])
        #expect(await eventually(timeout: .seconds(60)) { results.withLock { $0.count } == 2 })
        for result in results.withLock({ $0 }) {
            #expect(try result.get() == uri(upstream.fileURL, "main", head))
        }
        #expect(!FileManager.default.fileExists(atPath: git.directory + "/overlaps"), "two fetches ran into one mirror at once")
    }

    @Test("a call waits for another process's stuck fetch of the same mirror at most the git timeout, and runs no git meanwhile")
    func waitForAnotherProcessIsBounded() async throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let alias = cache + "-alias"
        try FileManager.default.createSymbolicLink(atPath: alias, withDestinationPath: cache)
        defer { try? FileManager.default.removeItem(atPath: alias) }
        let git = try FetchCountingGit(onFetch: "sleep 9; exit 1")
        defer { git.remove() }
        let stuck = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, timeout: .seconds(30),
            gitExecutable: git.executable, logger: silentLogger)
        let waiting = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: alias, timeout: .seconds(3),
            gitExecutable: git.executable, logger: silentLogger)
        let first = Mutex<Result<SourceURI, BackendError>?>(nil)
        Thread.detachNewThread {
            let result = Result { () throws(BackendError) in try stuck.latest() }
            first.withLock { $0 = result }
        }
        #expect(await eventually { git.fetches == 1 })
        #expect {
            try waiting.latest()
        } throws: { error in
            guard case .unavailable(let retryable, let detail) = error as? BackendError else { return false }
            return retryable && detail.contains("still running")
        }
        #expect(git.fetches == 1, "the waiting call ran a fetch of its own")
        #expect(await eventually(timeout: .seconds(30)) { first.withLock { $0 } != nil })
    }

    @Test("reading a complete mirror (ancestry, a history page) does not wait for a fetch of it, stuck or not")
    func readsDoNotWaitForAFetch() async throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let first = try upstream.commit("one")
        let second = try upstream.commit("two")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // Fetches hang once the stall file exists.
        let git = try FetchCountingGit(onFetch: #"if [ -e "$(dirname "$0")/stall" ]; then sleep 9; exit 1; fi"#)
        defer { git.remove() }
        let fetching = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, timeout: .seconds(30),
            gitExecutable: git.executable, logger: silentLogger)
        let reading = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, timeout: .seconds(3),
            gitExecutable: git.executable, logger: silentLogger)
        #expect(try fetching.latest() == uri(upstream.fileURL, "main", second))
        try #require(FileManager.default.createFile(atPath: git.directory + "/stall", contents: nil))
        let stuck = Mutex<Result<SourceURI, BackendError>?>(nil)
        Thread.detachNewThread {
            let result = Result { () throws(BackendError) in try fetching.latest() }
            stuck.withLock { $0 = result }
        }
        #expect(await eventually { git.fetches == 2 })
        #expect(try reading.isAncestor(uri(upstream.fileURL, "main", first), of: uri(upstream.fileURL, "main", second)))
        #expect(try reading.history(cursor: second, limit: 1).uris == [uri(upstream.fileURL, "main", second)])
        #expect(await eventually(timeout: .seconds(30)) { stuck.withLock { $0 } != nil })
    }

    @Test("a repository whose transport git may not use (ext::, fd::, a remote helper, ftp, an upper-case scheme) is a configuration error: notFound without running git", arguments: [
        "ext::sh -c touch% /tmp/stovepipe-ext", "fd::7", "testgit::/tmp/r", "ftp://example.invalid/r.git",
        "HTTPS://example.invalid/r.git", "rsync://example.invalid/r.git", "foo+bar://example.invalid/r.git",
    ])
    func disallowedTransportRunsNothing(_ repository: String) throws {
        let fake = try MarkerGit()
        defer { fake.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        #expect(!GitSourceControl.isValidRepository(repository))
        let git = GitSourceControl(
            repository: repository, ref: "main", cacheDirectory: cache, gitExecutable: fake.executable, logger: silentLogger)
        #expect(throws: BackendError.notFound) { try git.latest() }
        #expect(!fake.ran, "git ran")
    }

    @Test("the transports git is allowed to use, and local paths, are accepted", arguments: [
        "https://example.invalid/r.git", "http://example.invalid/r.git", "ssh://example.invalid/r.git",
        "git+ssh://example.invalid/r.git", "ssh+git://example.invalid/r.git", "git://example.invalid/r.git", "file:///srv/r.git",
        "deploy@example.invalid:r.git", "[::1]:r.git", "/srv/r.git", "relative/r", "./a:b", "C:/r",
    ])
    func allowedTransportsAreAccepted(_ repository: String) {
        #expect(GitSourceControl.isValidRepository(repository))
    }

    @Test("a transport git refuses at run time (a url.insteadOf in git's configuration rewriting to ext::) is a final error, not one to retry")
    func transportRefusedByGitIsFinal() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let git = try WrappedGit(prelude: """
            GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=url.ext::false.insteadOf GIT_CONFIG_VALUE_0=file://
            export GIT_CONFIG_COUNT GIT_CONFIG_KEY_0 GIT_CONFIG_VALUE_0
            """)
        defer { git.remove() }
        let source = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, gitExecutable: git.executable, logger: silentLogger)
        #expect {
            try source.latest()
        } throws: { error in
            guard case .unavailable(let retryable, let detail) = error as? BackendError else { return false }
            return !retryable && detail.contains("transport")
        }
    }

    @Test("a mirror whose git init was cut short is completed, not taken for a repository that is not one")
    func interruptedInit() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        let head = try upstream.commit("one")
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // The first init stops where git 2.39 writes HEAD and config but not yet objects/, and then hangs until
        // the timeout kills it: what a crash or a timeout in the middle of `git init` leaves behind.
        let git = try WrappedGit(prelude: """
            marker="$(dirname "$0")/interrupted"
            # GitRunner runs `git -c <option> -c <option> init --bare --quiet -- <mirror>`.
            if [ "$5" = init ] && [ ! -e "$marker" ]; then
                touch "$marker"; "$(dirname "$0")/git" "$@" && rm -rf "$9/objects"; exec sleep 30
            fi
            """)
        defer { git.remove() }
        let source = GitSourceControl(
            repository: upstream.fileURL, ref: "main", cacheDirectory: cache, timeout: .seconds(2),
            gitExecutable: git.executable, logger: silentLogger)
        #expect {
            try source.latest()
        } throws: { error in
            guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
            return retryable
        }
        #expect(try source.latest() == uri(upstream.fileURL, "main", head))
    }

    @Test("the cache directory it creates is private to this user: mirrors of private repositories are not world-readable")
    func cacheDirectoryIsPrivate() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let scratch = try makeScratchDirectory("cache-parent")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        let cache = scratch + "/mirrors"
        _ = try GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger).latest()
        let mode = try #require(try FileManager.default.attributesOfItem(atPath: cache)[.posixPermissions] as? Int)
        #expect(mode & 0o077 == 0, "mode \(String(mode, radix: 8))")
    }

    @Test("a cache directory, or a symlink to one, that another user owns is refused", .enabled(if: geteuid() == 0))
    func foreignCacheDirectoryRefused() throws {
        let upstream = try ScratchRepository()
        defer { upstream.remove() }
        try upstream.commit("one")
        let scratch = try makeScratchDirectory("cache-parent")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // As another local user would leave them in a shared /tmp before the service first runs.
        let planted = scratch + "/planted"
        try FileManager.default.createDirectory(atPath: planted, withIntermediateDirectories: false)
        #expect(chown(planted, 65534, 65534) == 0)
        let link = scratch + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: planted)
        #expect(lchown(link, 65534, 65534) == 0)
        for cache in [planted, link] {
            let source = GitSourceControl(repository: upstream.fileURL, ref: "main", cacheDirectory: cache, logger: silentLogger)
            #expect {
                try source.latest()
            } throws: { error in
                guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
                return !retryable
            }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: planted).isEmpty, "nothing is mirrored into it")
    }

    @Test("a password in a remote URL reaches git through a credential helper, not git's arguments, which ps shows")
    func passwordNotInArguments() throws {
        let server = try BasicAuthServer(user: "deploy", password: "s3cret/pw")
        defer { server.stop() }
        let git = try WrappedGit(prelude: #"printf '%s\n' "$@" >> "$(dirname "$0")/arguments""#)
        defer { git.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        let source = GitSourceControl(
            repository: "http://deploy:s3cret%2Fpw@127.0.0.1:\(server.port)/r.git", ref: "main", cacheDirectory: cache,
            gitExecutable: git.executable, logger: silentLogger)

        #expect(throws: BackendError.self) { try source.latest() }
        let arguments = try String(contentsOfFile: git.directory + "/arguments", encoding: .utf8)
        #expect(!arguments.contains("s3cret"), "git's arguments: \(arguments)")
        #expect(arguments.contains("http://127.0.0.1:\(server.port)/r.git\n"))
        #expect(server.authorizations.last == "Basic " + Data("deploy:s3cret/pw".utf8).base64EncodedString())
    }

    @Test("the mirror's path, which ps shows in git's arguments, is not derived from the URL's credentials")
    func mirrorNameWithoutCredentials() throws {
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        // Port 1: the fetches fail at once, after each source has made its mirror.
        for userPart in ["deploy:first-pw@", "deploy:second-pw@", ""] {
            let source = GitSourceControl(
                repository: "http://\(userPart)127.0.0.1:1/r.git", ref: "main", cacheDirectory: cache, logger: silentLogger)
            #expect(throws: BackendError.self) { try source.latest() }
        }
        // A hash of the password, in every git command line, would let anyone on the machine test guesses offline.
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache).filter { $0.hasSuffix(".git") }.count == 1)
    }

    @Test("a token in the user part of an http(s) URL (https://TOKEN:x-oauth-basic@…, https://TOKEN@…) is not in git's arguments either")
    func userTokenNotInArguments() throws {
        let server = try BasicAuthServer(user: "ghp_t0ken", password: "x-oauth-basic")
        defer { server.stop() }
        let git = try WrappedGit(prelude: #"printf '%s\n' "$@" >> "$(dirname "$0")/arguments""#)
        defer { git.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        for userPart in ["ghp_t0ken:x-oauth-basic@", "ghp_t0ken@"] {
            let source = GitSourceControl(
                repository: "http://\(userPart)127.0.0.1:\(server.port)/r.git", ref: "main", cacheDirectory: cache,
                gitExecutable: git.executable, logger: silentLogger)
            #expect(throws: BackendError.self) { try source.latest() }
        }
        let arguments = try String(contentsOfFile: git.directory + "/arguments", encoding: .utf8)
        #expect(!arguments.contains("ghp_t0ken"), "git's arguments: \(arguments)")
        // The token still reaches the server, as the user name of the first URL.
        #expect(server.authorizations.contains("Basic " + Data("ghp_t0ken:x-oauth-basic".utf8).base64EncodedString()))
    }

    @Test("a remote URL whose password or http(s) user name decodes to a line break is notFound without running git", arguments: ["%0A", "%0d", "%00"])
    func passwordWithLineBreak(_ escape: String) throws {
        let fake = try MarkerGit()
        defer { fake.remove() }
        let cache = try makeScratchDirectory("cache")
        defer { try? FileManager.default.removeItem(atPath: cache) }
        for userPart in ["deploy:a\(escape)b", "a\(escape)b", "a\(escape)b:pw"] {
            let source = GitSourceControl(
                repository: "https://\(userPart)@127.0.0.1:1/r.git", ref: "main", cacheDirectory: cache,
                gitExecutable: fake.executable, logger: silentLogger)
            #expect(throws: BackendError.notFound, "\(userPart)") { try source.latest() }
        }
        #expect(!fake.ran)
    }

    @Test("credentials in a URL never reach URIs")
    func credentialsStripped() {
        #expect(GitSourceControl.withoutCredentials("https://user:token@example.com/r.git") == "https://example.com/r.git")
        #expect(GitSourceControl.withoutCredentials("https://example.com/a@b/r.git") == "https://example.com/a@b/r.git")
        #expect(GitSourceControl.withoutCredentials("git@example.com:r.git") == "git@example.com:r.git")
        #expect(GitSourceControl.withoutCredentials("/srv/git/r") == "/srv/git/r")
    }
}

/// Whether the real `git check-ref-format --allow-onelevel` accepts `ref` (which must not start with `-`: git would
/// read it as an option).
private func gitAcceptsRef(_ ref: String) throws -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: realGit)
    process.arguments = ["check-ref-format", "--allow-onelevel", ref]
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    try process.run()
    process.waitUntilExit()
    return process.terminationStatus == 0
}

@Suite("Git ref validation")
struct GitRefValidationTests {
    @Test("refs git check-ref-format accepts, in stovepipe's character set, are accepted", arguments: [
        "main", "refs/heads/main", "release/1.0", "feature_x-y", "v2", "a.b", "a-", "a_", "refs/heads/a.lock-b", "a.locked/b",
        "lock", "x.loc", "a/b-/c", "refs/tags/v1.2.3", "_", "9",
    ])
    func accepted(_ ref: String) throws {
        #expect(GitSourceControl.isValidRef(ref))
        #expect(try gitAcceptsRef(ref), "the table is wrong: git refuses it")
    }

    @Test("refs git check-ref-format refuses are refused", arguments: [
        "", "a..b", "..", "a//b", "/a", "a/", "/", "a.lock", "a.lock/b", "refs/heads/x.lock/y", "refs/heads/main.lock", ".a",
        "a/.b", "refs/.heads/x", "a.", "a/b.", "a/.", "a/..", ".", "@", "@{-1}", "a@{b", "a b", "a\tb", "a\u{7f}b", "a\u{1}",
        "a~1", "a^", "a:b", "a?b", "a*", "a[b", "a\\b", "refs/heads/a b",
    ])
    func refused(_ ref: String) throws {
        #expect(!GitSourceControl.isValidRef(ref))
        #expect(try !gitAcceptsRef(ref), "the table is wrong: git accepts it")
    }

    @Test("refs git accepts that stovepipe refuses: option-like, HEAD, too long, or bytes outside A-Z a-z 0-9 . _ - /", arguments: [
        "a/-b", "refs/heads/-x", "HEAD", "a@b", "@a", "a{b}", "a+b", "a#b", "a%b", "a'b", "\"q\"", "a,b", "a=b", "f\u{fc}r",
        String(repeating: "a", count: 256),
    ])
    func refusedByStovepipeOnly(_ ref: String) throws {
        #expect(!GitSourceControl.isValidRef(ref))
        #expect(try gitAcceptsRef(ref), "the table is wrong: git refuses it")
    }

    @Test("option-like refs are refused", arguments: ["-x", "--upload-pack=x", "-"])
    func optionLike(_ ref: String) {
        #expect(!GitSourceControl.isValidRef(ref))
    }
}

/// Runs `body` with SIGTERM ignored in this process and blocked on this thread, as `stovepipe serve` has it
/// (SignalWaiter), and restores both afterwards.
@discardableResult
private func withSIGTERMIgnoredAndBlocked<T>(_ body: () throws -> T) throws -> T {
    var ignore = sigaction()
    ignore.__sigaction_handler.sa_handler = SIG_IGN
    sigemptyset(&ignore.sa_mask)
    var previousAction = sigaction()
    try #require(sigaction(SIGTERM, &ignore, &previousAction) == 0)
    defer { sigaction(SIGTERM, &previousAction, nil) }
    var term = sigset_t()
    sigemptyset(&term)
    sigaddset(&term, SIGTERM)
    var previousMask = sigset_t()
    try #require(pthread_sigmask(SIG_BLOCK, &term, &previousMask) == 0)
    defer { pthread_sigmask(SIG_SETMASK, &previousMask, nil) }
    // Proves the setup took: the calling thread itself has SIGTERM ignored and blocked.
    let own = try signalMasks(in: String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8))
    try #require(own.ignored & sigtermBit != 0 && own.blocked & sigtermBit != 0)
    return try body()
}

/// SIGTERM (15) in the SigIgn/SigBlk masks of /proc/<pid>/status, where signal n is bit n - 1.
private let sigtermBit: UInt64 = 1 << (UInt64(SIGTERM) - 1)

/// The `SigIgn:` and `SigBlk:` masks of a /proc/<pid>/status text.
private func signalMasks(in status: String) throws -> (ignored: UInt64, blocked: UInt64) {
    func mask(_ name: String) throws -> UInt64 {
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix(name + ":") })
        let hex = line.dropFirst(name.count + 1).trimmingCharacters(in: .whitespaces)
        return try #require(UInt64(hex, radix: 16))
    }
    return (try mask("SigIgn"), try mask("SigBlk"))
}

/// A scratch directory with a git executable running the script `script(directory)` writes, and a GitRunner for it.
private func scriptedGit(
    _ name: String, timeout: Duration = .seconds(30), script: (_ directory: String) -> String
) throws -> (directory: String, runner: GitRunner) {
    let directory = try makeScratchDirectory(name)
    try WrappedGit.install(script(directory), at: directory + "/git", in: directory)
    return (directory, GitRunner(executable: directory + "/git", timeout: timeout))
}

@Suite("GitRunner under the signal setup of stovepipe serve")
struct GitRunnerSignalTests {
    @Test("git starts with SIGTERM neither ignored nor blocked, though its caller ignores and blocks it")
    func sigtermReset() throws {
        // exec: the process GitRunner started reads its own status; a shell waiting for a child blocks every
        // signal meanwhile (dash), so the shell's status read from a child would race with that.
        let (directory, runner) = try scriptedGit("signal-git") {
            "#!/bin/sh\nexec grep -E '^(SigIgn|SigBlk):' /proc/self/status > '\($0)/status'\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = try withSIGTERMIgnoredAndBlocked { try runner.run(["version"]) }
        #expect(output.status == 0)
        let child = try signalMasks(in: String(contentsOfFile: directory + "/status", encoding: .utf8))
        #expect(child.ignored & sigtermBit == 0, "SIGTERM is ignored in git")
        #expect(child.blocked & sigtermBit == 0, "SIGTERM is blocked in git")
    }

    @Test("a descriptor this process left inheritable (no FD_CLOEXEC) does not reach git")
    func noDescriptorLeaks() throws {
        // 200: far above what the shell opens itself; dup2 leaves the copy without FD_CLOEXEC (dup2(2)).
        let opened = open("/dev/null", O_RDONLY | O_CLOEXEC)
        try #require(opened >= 0)
        defer { close(opened) }
        try #require(dup2(opened, 200) == 200)
        defer { close(200) }
        try #require(fcntl(200, F_GETFD) & FD_CLOEXEC == 0)
        let (directory, runner) = try scriptedGit("fd-git") {
            "#!/bin/sh\nif [ -e /proc/$$/fd/200 ]; then echo leaked; else echo closed; fi > '\($0)/fd'\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = try runner.run(["version"])
        #expect(output.status == 0)
        #expect(try String(contentsOfFile: directory + "/fd", encoding: .utf8) == "closed\n")
    }

    @Test("stovepipe's own settings (the ingest secret, the MySQL URL with its password) do not reach git")
    func noStovepipeSettingsInGitsEnvironment() throws {
        // A name of its own: the real settings would change how other tests' servers, started meanwhile, behave.
        setenv("STOVEPIPE_TEST_GIT_ENVIRONMENT_PROBE", "secret", 1)
        defer { unsetenv("STOVEPIPE_TEST_GIT_ENVIRONMENT_PROBE") }
        let (directory, runner) = try scriptedGit("env-git") { "#!/bin/sh\nenv > '\($0)/env'\n" }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try runner.run(["version"]).status == 0)
        let environment = try String(contentsOfFile: directory + "/env", encoding: .utf8)
        #expect(environment.contains("GIT_TERMINAL_PROMPT=0"), "the probe read git's environment")
        #expect(!environment.contains("STOVEPIPE_"), "\(environment)")
    }

    @Test("variables git reads as the repository's own (GIT_SHALLOW_FILE, GIT_GRAFT_FILE) in the service's environment do not change ancestry")
    func repositoryLocalVariablesDoNotReachGit() throws {
        let repository = try ScratchRepository()
        defer { repository.remove() }
        let first = try repository.commit("one")
        let second = try repository.commit("two")
        let scratch = try makeScratchDirectory("local-env")
        defer { try? FileManager.default.removeItem(atPath: scratch) }
        // Each file cuts history at `second`, so `first` would no longer be its ancestor.
        try Data("\(second)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/shallow"))
        try Data("\(second)\n".utf8).write(to: URL(fileURLWithPath: scratch + "/grafts"))
        let inherited = ProcessInfo.processInfo.environment
        for (name, file) in [("GIT_SHALLOW_FILE", "shallow"), ("GIT_GRAFT_FILE", "grafts")] {
            let runner = GitRunner(
                executable: realGit, timeout: .seconds(30), inherited: inherited.merging([name: scratch + "/" + file]) { $1 })
            let result = try runner.run(in: repository.path, ["merge-base", "--is-ancestor", first, second])
            #expect(result.status == 0, "\(name) reached git: \(result.stderr)")
        }
    }

    @Test("git's output goes to no file, so it takes no file space and a process that exits or is killed while git runs leaves none behind")
    func outputFilesAreAnonymous() throws {
        // The readlinks run in subshells: dash execs a script's last command in place, redirection included.
        let (directory, runner) = try scriptedGit("anonymous-git") {
            "#!/bin/sh\nout=$(readlink /proc/$$/fd/1); err=$(readlink /proc/$$/fd/2)\necho \"$out\" > '\($0)/stdout'; echo \"$err\" > '\($0)/stderr'\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(try runner.run(["version"]).status == 0)
        for stream in ["stdout", "stderr"] {
            let target = try String(contentsOfFile: "\(directory)/\(stream)", encoding: .utf8)
            #expect(!target.hasPrefix("/"), "git's \(stream) is \(target)")
        }
    }

    @Test("more output than the runner reads back is a clear failure, not memory without bound")
    func outputBeyondTheLimitIsRefused() throws {
        let (directory, runner) = try scriptedGit("chatty-git") { _ in
            "#!/bin/sh\nhead -c \(GitRunner.maxOutputBytes + 1) /dev/zero\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: BackendError.unavailable(
            retryable: false, detail: "git rev-parse printed more than \(GitRunner.maxOutputBytes) bytes")) {
            try runner.run(["rev-parse"])
        }
    }

    @Test("on a timeout git gets SIGTERM it can act on, though its caller ignores and blocks it")
    func timeoutDeliversSIGTERM() throws {
        // A git that cleans up on SIGTERM (as git removes its lock files) and otherwise hangs.
        let (directory, runner) = try scriptedGit("trapping-git", timeout: .seconds(2)) {
            "#!/bin/sh\ntrap \"echo term > '\($0)/term'; exit 143\" TERM\nsleep 60 &\nwait\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let trapped = directory + "/term"
        try withSIGTERMIgnoredAndBlocked {
            #expect {
                try runner.run(["fetch"])
            } throws: { error in
                guard case .unavailable(let retryable, _) = error as? BackendError else { return false }
                return retryable
            }
        }
        // The runner returns only after git has exited, so the trap has written its file by now if it ran.
        let text = (try? String(contentsOfFile: trapped, encoding: .utf8)) ?? ""
        #expect(text == "term\n", "git's SIGTERM trap did not run")
    }
}

@Suite("GitRunner output limits")
struct GitRunnerOutputLimitTests {
    @Test("a git writing many MiB to stderr (a remote's endless progress) takes no file space and keeps only the start and the end, where git's error is")
    func stderrFloodIsBounded() throws {
        let (directory, runner) = try scriptedGit("noisy-git") {
            """
            #!/bin/sh
            echo 'remote: first line' >&2
            yes 'remote: Counting objects' | head -c 33554432 >&2
            stat -L -c %s /proc/self/fd/2 > '\($0)/size'
            echo 'fatal: the remote end hung up unexpectedly' >&2
            exit 128

            """
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let output = try runner.run(["fetch"])
        #expect(output.status == 128)
        #expect(output.stderr.utf8.count <= 64 << 10, "kept \(output.stderr.utf8.count) bytes of stderr")
        #expect(output.stderr.hasPrefix("remote: first line\n"))
        #expect(output.stderr.hasSuffix("fatal: the remote end hung up unexpectedly\n"))
        let size = try String(contentsOfFile: directory + "/size", encoding: .utf8)
        #expect(size == "0\n", "32 MiB of stderr took \(size) bytes of file space")
    }

    @Test("a git that prints more than the limit to stdout and keeps running is stopped then, not at the timeout")
    func stdoutFloodStopsGit() async throws {
        // SIGTERM ignored, so only the SIGKILL that follows it stops git: the call must wait for that too.
        let (directory, runner) = try scriptedGit("flooding-git", timeout: .seconds(20)) {
            "#!/bin/sh\ntrap '' TERM\necho $$ > '\($0)/pid'\nhead -c \(GitRunner.maxOutputBytes + 1) /dev/zero\nexec sleep 60\n"
        }
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(throws: BackendError.unavailable(
            retryable: false, detail: "git rev-parse printed more than \(GitRunner.maxOutputBytes) bytes")) {
            try runner.run(["rev-parse"])
        }
        let text = try String(contentsOfFile: directory + "/pid", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let pid = try #require(Int32(text))
        defer { if isRunning(pid) { kill(pid, SIGKILL) } }
        #expect(!isRunning(pid), "git outlived the call")
        #expect(!FileManager.default.fileExists(atPath: "/proc/\(pid)"), "git was not reaped before the call returned")
    }
}
