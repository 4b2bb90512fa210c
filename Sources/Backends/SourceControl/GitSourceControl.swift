public import Domain
import Foundation
public import Logging
import Synchronization

/// One ref of a real git repository, read with the git command line on the caller's thread.
///
/// URIs are `git+<repository>#<ref>@<commit id>` (credentials in a URL's user part are left out);
/// only this backend parses them. A ref not starting with `refs/` names a branch (`main` is
/// `refs/heads/main`). A remote repository (a URL with `://`, or scp-like `[user@]host:path`) is read through a
/// private bare mirror under the cache directory, fetched by `latest` and whenever a commit is missing.
/// History cursors are the commit id the next page starts at, so paging is stable when the ref moves.
public final class GitSourceControl: SourceControl {
    /// The repository path or URL as configured.
    public let repository: String
    /// The ref as configured.
    public let ref: String
    private let fullRef: String?
    private let location: Location
    private let uriPrefix: String
    private let runner: GitRunner
    private let logger: Logger
    private let onHousekeeping: @Sendable (_ succeeded: Bool) -> Void

    private enum Location {
        case local(path: String)
        /// `url` is what git is given: the configured URL less its credentials, which git gets from `credentials`,
        /// the environment of its credential configuration.
        case remote(url: String, credentials: [String: String], mirror: String)
        case invalid
    }

    /// The longest page `history` returns.
    public static let maxPageSize = 1000

    /// Reads `ref` of `repository` (a local path or URL), mirroring remotes under `cacheDirectory`; `onHousekeeping`
    /// hears whether each housekeeping run of a mirror succeeded.
    /// An invalid ref or repository makes every call `notFound` without running git.
    public init(
        repository: String, ref: String, cacheDirectory: String = NSTemporaryDirectory() + "stovepipe-git-mirrors",
        timeout: Duration = .seconds(10), gitExecutable: String? = nil, logger: Logger,
        onHousekeeping: @escaping @Sendable (_ succeeded: Bool) -> Void = { _ in }
    ) {
        self.repository = repository
        self.ref = ref
        self.logger = logger
        self.onHousekeeping = onHousekeeping
        runner = GitRunner(executable: gitExecutable, timeout: timeout)
        fullRef = Self.isValidRef(ref) ? (ref.hasPrefix("refs/") ? ref : "refs/heads/\(ref)") : nil
        uriPrefix = Self.uriPrefix(repository: repository, ref: ref)
        if !Self.isValidRepository(repository) {
            location = .invalid
        } else if Self.isRemote(repository) {
            let mirror = URL(fileURLWithPath: cacheDirectory, isDirectory: true)
                .appendingPathComponent(Self.mirrorName(for: repository)).path
            let (url, username, password) = Self.splitCredentials(repository)
            // git refuses a URL whose decoded user name or password holds a line break (CVE-2020-5260); in the
            // credential protocol it would end the value and start another line.
            if [username, password].contains(where: { $0?.utf8.contains { $0 == 0x0A || $0 == 0x0D || $0 == 0 } == true }) {
                location = .invalid
            } else {
                location = .remote(
                    url: url, credentials: Self.credentialEnvironment(username: username, password: password), mirror: mirror)
            }
        } else {
            location = .local(path: URL(fileURLWithPath: repository).standardizedFileURL.path)
        }
    }

    /// The length of the longest URI this source can return: its prefix and a SHA-256 object id.
    public static func longestURILength(repository: String, ref: String) -> Int {
        uriPrefix(repository: repository, ref: ref).unicodeScalars.count + 64
    }

    private static func uriPrefix(repository: String, ref: String) -> String {
        "git+\(withoutCredentials(repository))#\(ref)@"
    }

    /// The URI of the commit `ref` points at now (fetched first for a remote).
    public func latest() throws(BackendError) -> SourceURI {
        let asked = ContinuousClock.now
        let (directory, fullRef) = try prepare(askedAt: asked)
        if case .remote(let url, let credentials, _) = location {
            try fetch(url: url, credentials: credentials, into: directory, fullRef: fullRef, askedAt: asked)
        }
        return uri(try resolve(fullRef, in: directory))
    }

    /// `git merge-base --is-ancestor`; `notFound` for a URI of another repository or ref, or an unknown commit.
    public func isAncestor(_ ancestor: SourceURI, of descendant: SourceURI) throws(BackendError) -> Bool {
        guard let ancestorID = commitID(in: ancestor), let descendantID = commitID(in: descendant) else {
            throw .notFound
        }
        let asked = ContinuousClock.now
        let (directory, _) = try prepare(askedAt: asked)
        let arguments = ["merge-base", "--is-ancestor", "--end-of-options", ancestorID, descendantID]
        var result = try runner.run(in: directory, arguments)
        if result.status != 0 && result.status != 1 {
            // Only now tell an unknown commit (notFound; a remote is fetched once first) from a failure.
            try requireCommits([ancestorID, descendantID], in: directory, askedAt: asked)
            result = try runner.run(in: directory, arguments)
        }
        switch result.status {
        case 0: return true
        case 1: return false
        default: throw failure("merge-base", result)
        }
    }

    /// First-parent history from `cursor` (empty: the head now); `notFound` for an unknown cursor.
    public func history(cursor: String, limit: Int) throws(BackendError) -> HistoryPage {
        let pageSize = min(max(limit, 1), Self.maxPageSize)
        let asked = ContinuousClock.now
        let (directory, fullRef) = try prepare(askedAt: asked)
        let start: String
        if cursor.isEmpty {
            if case .remote(let url, let credentials, _) = location {
                try fetch(url: url, credentials: credentials, into: directory, fullRef: fullRef, askedAt: asked)
            }
            start = try resolve(fullRef, in: directory)
        } else {
            guard Self.isObjectID(cursor) else { throw .notFound }
            start = cursor
        }
        // One extra commit: it is the next page's start, and its absence means this is the last page.
        let arguments = ["rev-list", "--first-parent", "--max-count=\(pageSize + 1)", "--end-of-options", start]
        var result = try runner.run(in: directory, arguments)
        if result.status != 0 && !cursor.isEmpty {
            try requireCommits([start], in: directory, askedAt: asked)
            result = try runner.run(in: directory, arguments)
        }
        guard result.status == 0 else { throw failure("rev-list", result) }
        let ids = result.stdout.split(whereSeparator: \.isNewline).map(String.init)
        guard ids.allSatisfy(Self.isObjectID) else {
            throw .unavailable(retryable: false, detail: "git rev-list printed something other than commit ids")
        }
        let page = ids.prefix(pageSize).map(uri)
        let nextCursor = ids.count > pageSize ? ids[pageSize] : ""
        return HistoryPage(uris: page, nextCursor: nextCursor)
    }

    /// Whether `repository` is accepted: not empty, no leading `-` (git would take it for an option), no NUL, and read
    /// through a transport git may use (a local path, `file://`, `git://`, `http(s)://`, `ssh://` or scp-like `host:path`).
    public static func isValidRepository(_ repository: String) -> Bool {
        repositoryProblem(repository) == nil
    }

    /// Why `repository` is not accepted, or nil when it is.
    public static func repositoryProblem(_ repository: String) -> String? {
        guard !repository.isEmpty, !repository.hasPrefix("-"), !repository.utf8.contains(0) else {
            return "must not be empty, start with '-' or contain NUL"
        }
        let transport = transport(of: repository)
        guard GitRunner.allowedTransports.contains(transport) else {
            return "needs git's transport '\(transport)', which stovepipe does not let git use; use a local path, an "
                + "scp-like host:path, or a URL of \(GitRunner.allowedTransports.map { $0 + "://" }.joined(separator: " "))"
        }
        return nil
    }

    /// The transport git reads `repository` with, as git's transport_get picks it: `<helper>::<address>` names a remote
    /// helper, `<scheme>://` its scheme (`git+ssh` and `ssh+git` are ssh), an scp-like address is ssh, a path is file.
    static func transport(of repository: String) -> String {
        let bytes = Array(repository.utf8)
        // git's is_urlschemechar: a letter first, then letters, digits, '+', '-' and '.'; case counts, as git compares
        // the name with GIT_ALLOW_PROTOCOL's as it is.
        var end = 0
        while end < bytes.count {
            let byte = bytes[end]
            let isLetter = (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z")
            let isOther = (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")) || Set("+-.".utf8).contains(byte)
            guard isLetter || (end > 0 && isOther) else { break }
            end += 1
        }
        let scheme = String(decoding: bytes[..<end], as: UTF8.self)
        let rest = bytes[end...]
        if rest.starts(with: "::".utf8) { return scheme }
        if end > 0, rest.starts(with: "://".utf8) { return ["git+ssh", "ssh+git"].contains(scheme) ? "ssh" : scheme }
        return isRemote(repository) ? "ssh" : "file"
    }

    /// Whether `ref` is accepted: a name `git check-ref-format --allow-onelevel` accepts, of `A-Z a-z 0-9 . _ - /`
    /// only, with no component starting with `-`, not `HEAD`, at most 255 bytes.
    public static func isValidRef(_ ref: String) -> Bool {
        let bytes = Array(ref.utf8)
        guard !bytes.isEmpty, bytes.count <= 255, ref != "HEAD" else { return false }
        // Stovepipe's own rules, narrower than git's: a component starting with '-' reads as an option, and git
        // allows almost any other byte, which a ref name never needs.
        let allowed = bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"),
                UInt8(ascii: "/"):
                return true
            default:
                return false
            }
        }
        let components = bytes.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        guard allowed, components.allSatisfy({ $0.first != UInt8(ascii: "-") }) else { return false }
        return isCheckRefFormatName(bytes, components: components)
    }

    /// The rules of git-check-ref-format(1) with `--allow-onelevel`, numbered as there.
    private static func isCheckRefFormatName(_ bytes: [UInt8], components: [ArraySlice<UInt8>]) -> Bool {
        let dot = UInt8(ascii: ".")
        // 9: not the single character '@'; 7: no '.' at the end.
        guard bytes != [UInt8(ascii: "@")], bytes.last != dot else { return false }
        // 3 and 8: no '..', no '@{'.
        for (previous, byte) in zip(bytes, bytes.dropFirst()) {
            if previous == dot && byte == dot { return false }
            if previous == UInt8(ascii: "@") && byte == UInt8(ascii: "{") { return false }
        }
        // 4, 5 and 10: no control character, space, '~', '^', ':', '?', '*', '[' or '\\'.
        let forbidden = Set(" ~^:?*[\\".utf8)
        guard !bytes.contains(where: { $0 < 0x20 || $0 == 0x7f || forbidden.contains($0) }) else { return false }
        // 6: no '/' at either end or twice in a row (an empty component); 1: no component starting with '.' or
        // ending with '.lock'.
        let lock = Array(".lock".utf8)
        return components.allSatisfy { component in
            !component.isEmpty && component.first != dot && !component.suffix(lock.count).elementsEqual(lock)
        }
    }

    /// The directory git runs in and the full ref, or `notFound` for an invalid configuration.
    private func prepare(askedAt asked: ContinuousClock.Instant) throws(BackendError) -> (directory: String, fullRef: String) {
        guard let fullRef else { throw .notFound }
        switch location {
        case .invalid:
            throw .notFound
        case .local(let path):
            // A regular file is no repository either: git cannot even change to it, which is no failure to retry.
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw .notFound
            }
            return (path, fullRef)
        case .remote(_, _, let mirror):
            try ensureMirror(at: mirror, askedAt: asked)
            return (mirror, fullRef)
        }
    }

    private func resolve(_ fullRef: String, in directory: String) throws(BackendError) -> String {
        let result = try runner.run(in: directory, ["rev-parse", "--verify", "--quiet", "--end-of-options", "\(fullRef)^{commit}"])
        switch result.status {
        case 0:
            let id = result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            guard Self.isObjectID(id) else {
                throw .unavailable(retryable: false, detail: "git rev-parse printed something other than a commit id")
            }
            return id
        case 1:
            throw .notFound
        default:
            throw failure("rev-parse", result)
        }
    }

    private func commitExists(_ id: String, in directory: String) throws(BackendError) -> Bool {
        let result = try runner.run(in: directory, ["rev-parse", "--verify", "--quiet", "--end-of-options", "\(id)^{commit}"])
        switch result.status {
        case 0: return true
        case 1: return false
        default: throw failure("rev-parse", result)
        }
    }

    /// `notFound` unless every commit exists; a remote's mirror is fetched once if one is missing.
    private func requireCommits(_ ids: [String], in directory: String, askedAt asked: ContinuousClock.Instant) throws(BackendError) {
        var missing = false
        for id in ids where try !commitExists(id, in: directory) {
            missing = true
        }
        guard missing else { return }
        guard case .remote(let url, let credentials, _) = location, let fullRef else { throw .notFound }
        try fetch(url: url, credentials: credentials, into: directory, fullRef: fullRef, askedAt: asked)
        for id in ids where try !commitExists(id, in: directory) {
            throw .notFound
        }
    }

    private func ensureMirror(at mirror: String, askedAt asked: ContinuousClock.Instant) throws(BackendError) {
        // git init makes refs/, HEAD and config before objects/ (git 2.39's setup.c), so a mirror with all three is
        // complete: reading it needs no turn, and waiting for one would hold every read behind a fetch, which git's
        // atomic ref updates make safe to read alongside.
        try Self.prepareCacheDirectory(of: mirror)
        if Self.isInitialized(mirror) { return }
        try Self.exclusively(on: mirror, until: asked + runner.timeout) { _ throws(BackendError) in
            // An init cut short by a crash or the timeout leaves HEAD without objects/, and git then takes the
            // directory for no repository at all. Running init again completes it.
            if Self.isInitialized(mirror) { return }
            let result = try runner.run(["init", "--bare", "--quiet", "--", mirror])
            guard result.status == 0 else { throw failure("init", result) }
        }
    }

    /// Whether `git init` of `mirror` has completed.
    private static func isInitialized(_ mirror: String) -> Bool {
        ["HEAD", "objects", "refs"].allSatisfy { FileManager.default.fileExists(atPath: mirror + "/" + $0) }
    }

    /// Creates the cache directory `mirror` is in, unless it exists; `unavailable` when it cannot or another user owns it.
    private static func prepareCacheDirectory(of mirror: String) throws(BackendError) {
        let parent = URL(fileURLWithPath: mirror).deletingLastPathComponent().path
        do {
            // Mirrors of private repositories are readable by no other user.
            try FileManager.default.createDirectory(
                atPath: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw .unavailable(retryable: false, detail: "cannot create the git cache directory")
        }
        // Another user who made the directory first (the default is under the shared temporary directory)
        // could read every mirror, or swap one for a repository of theirs.
        guard isOwnDirectory(parent) else {
            throw .unavailable(retryable: false, detail: "the git cache directory, or a symlink to it, belongs to another user")
        }
    }

    /// Whether `path` is a directory of this process's user or root, reached through no link of another user.
    private static func isOwnDirectory(_ path: String) -> Bool {
        var link = stat()
        var target = stat()
        guard lstat(path, &link) == 0, stat(path, &target) == 0 else { return false }
        // Root's too, as OpenSSH's StrictModes allows: a volume mounted root-owned and group-writable for the
        // service (Kubernetes' fsGroup) is the operator's choice, and root could read the mirrors anyway.
        let trusted: Set<uid_t> = [geteuid(), 0]
        return trusted.contains(link.st_uid) && trusted.contains(target.st_uid) && (target.st_mode & S_IFMT) == S_IFDIR
    }

    /// Fetches `fullRef`, unless a fetch of it that began at or after `asked` has already succeeded.
    private func fetch(
        url: String, credentials: [String: String], into mirror: String, fullRef: String, askedAt asked: ContinuousClock.Instant
    ) throws(BackendError) {
        try Self.fetchingOnce(fullRef, into: mirror, since: asked, until: asked + runner.timeout) { gate throws(BackendError) in
            removeStaleLocks(in: mirror)
            let fetch = { () throws(BackendError) -> GitOutput in
                try self.runner.run(in: mirror, [
                    "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--end-of-options", url,
                    "+\(fullRef):\(fullRef)",
                ], extraEnvironment: credentials)
            }
            var result = try fetch()
            if result.status != 0, !Self.isMissingOnRemote(result.stderr), try removeConflictingRefs(of: fullRef, in: mirror) {
                result = try fetch()
            }
            guard result.status == 0 else {
                if Self.isMissingOnRemote(result.stderr) { throw .notFound }
                throw failure("fetch", result)
            }
            housekeepIfDue(in: mirror, gate: gate)
        }
    }

    /// The least time between two housekeeping runs of one mirror in this process.
    static let housekeepingInterval = Duration.seconds(600)

    /// Runs `git gc --auto` on `mirror`, which `gate` holds, unless it ran in this process less than
    /// `housekeepingInterval` ago; its outcome is logged, never thrown: the fetch it follows has succeeded.
    private func housekeepIfDue(in mirror: String, gate: MirrorGate) {
        // The fetches' own automatic gc is off (GitRunner.maintenanceOptions), as a detached one escapes the timeout,
        // the group kill and the lock; this one runs in the foreground under all three. gc --auto does nothing until
        // loose objects or packs pass its thresholds (git-gc(1)), and the interval bounds even that check.
        let started = ContinuousClock.now
        if let last = gate.lastHousekeeping, started - last < Self.housekeepingInterval { return }
        gate.lastHousekeeping = started
        let result: GitOutput
        do {
            result = try runner.run(in: mirror, ["gc", "--auto", "--quiet"])
        } catch {
            logger.warning("git housekeeping failed", metadata: ["git.command": "gc", "git.error": "\(error)"])
            onHousekeeping(false)
            return
        }
        guard result.status == 0 else {
            // gc talks to no remote, so its errors name the mirror's files, never a URL's credentials.
            let line = result.stderr.split(separator: "\n").first { $0.hasPrefix("fatal: ") || $0.hasPrefix("error: ") }
            logger.warning(
                "git housekeeping failed",
                metadata: [
                    "git.command": "gc", "git.status": "\(result.status)", "git.error": "\(line.map { String($0.prefix(300)) } ?? "")",
                ])
            onHousekeeping(false)
            return
        }
        let elapsed = (ContinuousClock.now - started).components
        let seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
        logger.debug("git housekeeping done", metadata: ["git.command": "gc", "git.duration_seconds": "\(seconds)"])
        onHousekeeping(true)
    }

    /// Deletes the mirror's refs that keep `fullRef` from being written, and says whether there were any: a ref named
    /// by a leading part of it (`refs/heads/a` for `refs/heads/a/b`) or one below it (`refs/heads/a/b/c`).
    private func removeConflictingRefs(of fullRef: String, in mirror: String) throws(BackendError) -> Bool {
        // A ref cannot exist beside another whose name it extends by a '/' (refs are paths), on the remote as in the
        // mirror: a remote that has `fullRef` has none of these, so they are refs the mirror kept after the remote
        // deleted them (a fetch of one ref never prunes), and git refuses the fetch ("'…' exists; cannot create '…'")
        // until they go, as `git remote prune` would remove them (git-remote(1)). Whatever the failure was, deleting
        // them loses nothing: a mirror's refs are a cache, fetched again by the queue that reads them, and their
        // commits stay in the mirror.
        let components = fullRef.split(separator: "/")
        let leading = Set((1..<max(components.count, 1)).map { components[..<$0].joined(separator: "/") })
        let listed = try runner.run(in: mirror, ["for-each-ref", "--format=%(refname)"])
        guard listed.status == 0 else { return false }
        let conflicting = listed.stdout.split(separator: "\n").map(String.init).filter { name in
            leading.contains(name) || name.hasPrefix(fullRef + "/")
        }
        for name in conflicting {
            let deleted = try runner.run(in: mirror, ["update-ref", "-d", "--no-deref", "--end-of-options", name])
            guard deleted.status == 0 else { return false }
        }
        if !conflicting.isEmpty {
            logger.warning(
                "removed mirror refs the remote deleted, which kept the queue's ref from being fetched",
                metadata: ["git.refs_removed": "\(conflicting.count)"])
        }
        return !conflicting.isEmpty
    }

    /// Whether a failed fetch's stderr says the remote has no such ref or no such repository, which no retry mends.
    static func isMissingOnRemote(_ stderr: String) -> Bool {
        // git's own messages (LC_ALL=C): fetch's for a ref the remote does not advertise; upload-pack's enter_repo
        // failure, whose stderr is git's own over file:// and ssh; remote-curl's for an HTTP 404 (http.c's
        // HTTP_MISSING_TARGET). A refused connection, DNS or TLS failure, or an HTTP 5xx prints none of them and stays
        // retryable.
        gitLines(stderr).contains { line in
            line.hasPrefix("fatal: couldn't find remote ref ")
                || (line.hasPrefix("fatal: '") && line.hasSuffix("' does not appear to be a git repository"))
                || (line.hasPrefix("fatal: repository '") && line.hasSuffix("' not found"))
        }
    }

    /// The lines of `stderr` that are git's own words, which classifying a failure reads: not the ones whose words a
    /// remote chooses.
    static func gitLines(_ stderr: String) -> [Substring] {
        // git relays what a remote sends on the side band as lines it starts with "remote: " (sideband.c's
        // DISPLAY_PREFIX), ending a line at '\r' as at '\n'; a remote's ERR packet becomes "fatal: remote error: <its
        // text>" (connect.c). A remote, hostile or not, could otherwise print "couldn't find remote ref" and turn a
        // retryable failure into a missing ref.
        stderr.split(whereSeparator: \.isNewline).filter { line in
            !line.hasPrefix("remote:") && !line.hasPrefix("fatal: remote error:")
        }
    }

    /// Removes the `*.lock` files of `mirror` (at its top and under `refs/`) older than any git this service runs can
    /// live: a git killed mid-fetch (a crash, the OOM killer, the timeout's SIGKILL) leaves them, and git then refuses
    /// every later fetch of the ref ("Unable to create '…lock': File exists").
    private func removeStaleLocks(in mirror: String) {
        // Every git started here is killed within its timeout plus 7 s (GitRunner); twice that and a margin is
        // stale for any replica sharing the cache with the same timeout.
        let staleAfter = max(60, 2 * Double(runner.timeout.components.seconds) + 10)
        let cutoff = Date().addingTimeInterval(-staleAfter)
        var candidates = ["HEAD.lock", "config.lock", "packed-refs.lock", "shallow.lock", "index.lock"].map { mirror + "/" + $0 }
        if let refs = FileManager.default.enumerator(atPath: mirror + "/refs") {
            while let name = refs.nextObject() as? String {
                if name.hasSuffix(".lock") { candidates.append(mirror + "/refs/" + name) }
            }
        }
        var removed = 0
        for path in candidates {
            guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
                attributes[.type] as? FileAttributeType == .typeRegular,
                let modified = attributes[.modificationDate] as? Date, modified < cutoff,
                (try? FileManager.default.removeItem(atPath: path)) != nil
            else { continue }
            removed += 1
        }
        if removed > 0 {
            logger.warning("removed stale git lock files from a mirror", metadata: ["git.locks_removed": "\(removed)"])
        }
    }

    /// `notFound` when the directory is not a repository, else `unavailable`; logs the exit status only
    /// (never stderr, which may echo a URL with credentials).
    private func failure(_ command: String, _ result: GitOutput) -> BackendError {
        let lines = Self.gitLines(result.stderr)
        // LC_ALL=C keeps this message in English; git has no distinct exit status for it.
        if lines.contains(where: { $0.hasPrefix("fatal: not a git repository") }) { return .notFound }
        // git 2.35.2 and later refuse a repository another user owns (safe.directory, git-config(1)); that holds until
        // an operator acts, so retrying cannot help.
        if lines.contains(where: { $0.hasPrefix("fatal: detected dubious ownership") }) {
            logger.error("git refuses the repository: another user owns it", metadata: ["git.command": "\(command)"])
            return .unavailable(
                retryable: false,
                detail: "git refuses the repository because another user owns it; add it to safe.directory in the git configuration of the user stovepipe runs as")
        }
        // A url.<base>.insteadOf in git's configuration can rewrite an accepted URL to a transport git may not use;
        // that holds until an operator changes the configuration.
        if lines.contains(where: { $0.hasPrefix("fatal: transport '") && $0.hasSuffix("' not allowed") }) {
            logger.error("git refuses the repository's transport", metadata: ["git.command": "\(command)"])
            return .unavailable(
                retryable: false,
                detail: "git refuses the repository's transport (a url.<base>.insteadOf in git's configuration may rewrite it); it may use \(GitRunner.allowedTransports.joined(separator: ", ")) only")
        }
        logger.debug("git failed", metadata: ["git.command": "\(command)", "git.status": "\(result.status)"])
        return .unavailable(retryable: true, detail: "git \(command) exited with status \(result.status)")
    }

    private func uri(_ id: String) -> SourceURI { SourceURI(uriPrefix + id) }

    private func commitID(in uri: SourceURI) -> String? {
        guard uri.rawValue.hasPrefix(uriPrefix) else { return nil }
        let id = String(uri.rawValue.dropFirst(uriPrefix.count))
        return Self.isObjectID(id) ? id : nil
    }

    /// A full SHA-1 (40) or SHA-256 (64) object id in lowercase hex.
    static func isObjectID(_ text: String) -> Bool {
        (text.utf8.count == 40 || text.utf8.count == 64)
            && text.utf8.allSatisfy { ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "f")) }
    }

    /// Whether git reads `repository` over a transport, not as a local path: a URL with `://`, or an scp-like
    /// `[user@]host:path`, whose first `:` comes before any `/` (git's `url_is_local_not_ssh`).
    private static func isRemote(_ repository: String) -> Bool {
        if repository.contains("://") { return true }
        let bytes = Array(repository.utf8)
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return false }
        if let slash = bytes.firstIndex(of: UInt8(ascii: "/")), slash < colon { return false }
        // A drive letter (`C:/repo`) is a path, as git has it on Windows. git on Linux would try ssh to a host `C`;
        // a path is the likelier meaning, and as one it fails as notFound without a connection attempt.
        let isDriveLetter = colon == 1 && (bytes[0] | 0x20) >= UInt8(ascii: "a") && (bytes[0] | 0x20) <= UInt8(ascii: "z")
        return !isDriveLetter
    }

    /// `scheme://user:secret@host/path` without `user:secret@`, so URIs never carry credentials.
    static func withoutCredentials(_ repository: String) -> String {
        guard let scheme = repository.range(of: "://") else { return repository }
        let rest = repository[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return repository }
        return String(repository[..<scheme.upperBound]) + rest[rest.index(after: at)...]
    }

    /// The URL git is given, and the user name and password it gets elsewhere, percent-decoded as git decodes them:
    /// an http(s) URL loses its whole user part, any other URL only its password (ssh needs the user in the URL).
    static func splitCredentials(_ repository: String) -> (url: String, username: String?, password: String?) {
        guard let scheme = repository.range(of: "://") else { return (repository, nil, nil) }
        let rest = repository[scheme.upperBound...]
        let authorityEnd = rest.firstIndex(of: "/") ?? rest.endIndex
        guard let at = rest[..<authorityEnd].lastIndex(of: "@") else { return (repository, nil, nil) }
        let userPart = rest[..<at]
        let colon = userPart.firstIndex(of: ":")
        let password = colon.map { urlDecoded(userPart[userPart.index(after: $0)...]) }
        // A token is often the user name itself (https://TOKEN@host/…, https://TOKEN:x-oauth-basic@…); git passes the
        // URL it is given on to git-remote-https's arguments, which every user can read. credential.username
        // (gitcredentials(7)) gives git the same user name as the URL would, for http(s) only: ssh ignores it.
        if ["http", "https"].contains(repository[..<scheme.lowerBound].lowercased()) {
            let username = urlDecoded(userPart[..<(colon ?? userPart.endIndex)])
            return (withoutCredentials(repository), username.isEmpty ? nil : username, password)
        }
        guard let colon else { return (repository, nil, nil) }
        return (String(repository[..<colon]) + rest[at...], nil, password)
    }

    /// `%XX` decoded; a `%` without two hex digits after it stays as it is, as git's `url_decode_mem` leaves it.
    private static func urlDecoded(_ text: Substring) -> String {
        let bytes = Array(text.utf8)
        var decoded: [UInt8] = []
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "%"), index + 2 < bytes.count,
                let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) {
                decoded.append(high << 4 | low)
                index += 3
            } else {
                decoded.append(bytes[index])
                index += 1
            }
        }
        return String(decoding: decoded, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        // One byte is at most U+00FF, where only ASCII 0-9, a-f and A-F are hex digits.
        Character(Unicode.Scalar(byte)).hexDigitValue.map(UInt8.init)
    }

    /// Environment that hands git `username` and `password` through its configuration and a credential helper, so
    /// neither is ever in an argument vector; empty when there are neither.
    private static func credentialEnvironment(username: String?, password: String?) -> [String: String] {
        // Arguments of every process are world-readable (/proc/PID/cmdline), and git passes the URL it is given on
        // to git-remote-https's arguments; the environment is readable only by this user. GIT_CONFIG_COUNT
        // (git-config(1)): with a password, the empty helper first clears the configured ones (gitcredentials(7)), as
        // a password in the URL stops git asking them, and so none of them stores it. The password reaches the shell
        // only as a variable's value, never as part of the command text.
        var entries: [(key: String, value: String)] = []
        var environment: [String: String] = [:]
        if let username { entries.append(("credential.username", username)) }
        if let password {
            entries.append(("credential.helper", ""))
            entries.append((
                "credential.helper",
                #"!f() { test "$1" = get || return 0; printf 'password=%s\n' "$STOVEPIPE_GIT_PASSWORD"; }; f"#))
            environment["STOVEPIPE_GIT_PASSWORD"] = password
        }
        guard !entries.isEmpty else { return [:] }
        environment["GIT_CONFIG_COUNT"] = "\(entries.count)"
        for (index, entry) in entries.enumerated() {
            environment["GIT_CONFIG_KEY_\(index)"] = entry.key
            environment["GIT_CONFIG_VALUE_\(index)"] = entry.value
        }
        return environment
    }

    /// A readable, collision-resistant directory name: the URL's last segment and its FNV-1a hash.
    private static func mirrorName(for url: String) -> String {
        // The URL less its credentials, as in URIs: the mirror's path is in the arguments of every git run on it,
        // which any local user can read, and a fast hash of a password there could be tested against guesses. Another
        // password for the same repository (a rotated token) then keeps its mirror instead of cloning anew.
        let address = withoutCredentials(url)
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in address.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let tail = address.split(whereSeparator: { $0 == "/" || $0 == ":" }).last.map(String.init) ?? "repo"
        let safe = String(tail.unicodeScalars.filter { $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") }.prefix(40))
        let hex = String(hash, radix: 16)
        return "\(safe.isEmpty ? "repo" : safe)-\(String(repeating: "0", count: 16 - hex.count))\(hex).git"
    }

    // One gate per mirror directory, shared by every instance in the process: concurrent fetches into one
    // bare repository would race on its ref locks.
    private static let mirrorGates = Mutex<[String: MirrorGate]>([:])

    /// Runs `body` with `mirror` to itself, waiting for it until `deadline` (a call's arrival plus the git
    /// timeout, shared by every wait of the call): an unreachable remote then costs each call one timeout of
    /// waiting, not one for every call queued ahead of it.
    private static func exclusively(
        on mirror: String, until deadline: ContinuousClock.Instant, _ body: (MirrorGate) throws(BackendError) -> Void
    ) throws(BackendError) {
        let gate = mirrorGates.withLock { gates in
            if let existing = gates[mirror] { return existing }
            let created = MirrorGate()
            gates[mirror] = created
            return created
        }
        let wait = deadline - ContinuousClock.now
        guard gate.lock.lock(before: Date(timeIntervalSinceNow: Double(wait.nanoseconds) / 1e9)) else {
            throw .unavailable(retryable: true, detail: "another git command on this repository is still running")
        }
        defer { gate.lock.unlock() }
        try prepareCacheDirectory(of: mirror)
        let lock = try lockFile(of: mirror, until: deadline)
        defer { close(lock) }
        try body(gate)
    }

    /// An open descriptor of `mirror`'s lock file (`<mirror>.lock` beside it), locked with flock(2), waiting for it
    /// until `deadline`: other processes sharing the cache directory (replicas on one volume) write the mirror in turn.
    private static func lockFile(of mirror: String, until deadline: ContinuousClock.Instant) throws(BackendError) -> Int32 {
        // Beside the mirror, not in it: the lock must exist before the mirror does, while `git init` makes it.
        // O_NOFOLLOW: the cache directory is this user's, but a link planted in it must not be followed.
        let fd = open(mirror + ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else {
            let passing = [EMFILE, ENFILE, ENOMEM, EINTR].contains(errno)
            throw .unavailable(retryable: passing, detail: "cannot open the lock file of the git mirror")
        }
        // flock(2) waits without a deadline; git itself waits for its lock files by retrying with a growing pause
        // (lockfile.c), and so does this. Locks belong to open file descriptions: two instances in one process, each
        // with its own descriptor, exclude each other as two processes do.
        var pause = Duration.milliseconds(2)
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            let failure = errno
            if failure == EINTR { continue }
            let remaining = deadline - ContinuousClock.now
            guard failure == EWOULDBLOCK, remaining > .zero else {
                close(fd)
                if failure == EWOULDBLOCK {
                    throw .unavailable(retryable: true, detail: "another process's git command on this repository is still running")
                }
                throw .unavailable(retryable: failure == ENOLCK, detail: "cannot lock the git mirror")
            }
            Thread.sleep(forTimeInterval: Double(min(pause, remaining).nanoseconds) / 1e9)
            pause = min(pause * 2, .milliseconds(100))
        }
        return fd
    }

    /// Runs `fetch` of `fullRef` on `mirror` alone, unless a fetch of that ref that began at or after `arrived`
    /// has succeeded meanwhile: callers queued behind one fetch share the next instead of taking turns.
    private static func fetchingOnce(
        _ fullRef: String, into mirror: String, since arrived: ContinuousClock.Instant, until deadline: ContinuousClock.Instant,
        _ fetch: (MirrorGate) throws(BackendError) -> Void
    ) throws(BackendError) {
        try exclusively(on: mirror, until: deadline) { gate throws(BackendError) in
            if let started = gate.lastFetchStarted[fullRef], started >= arrived { return }
            let started = ContinuousClock.now
            try fetch(gate)
            gate.lastFetchStarted[fullRef] = started
        }
    }
}

/// Serialises the git commands that write one mirror and remembers when each ref's last successful fetch began, and
/// when its last housekeeping did.
// @unchecked Sendable: `lastFetchStarted` and `lastHousekeeping` are only read or written while `lock` is held.
private final class MirrorGate: @unchecked Sendable {
    let lock = NSLock()
    var lastFetchStarted: [String: ContinuousClock.Instant] = [:]
    var lastHousekeeping: ContinuousClock.Instant?
}
