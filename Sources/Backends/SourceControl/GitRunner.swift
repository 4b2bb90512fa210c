import Domain
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What one git invocation printed and how it exited.
struct GitOutput: Sendable {
    let status: Int32
    let stdout: String
    let stderr: String
}

/// Runs git with an argument vector (never a shell), a timeout, no terminal and no stdin.
struct GitRunner: Sendable {
    let executable: URL
    let timeout: Duration
    let environment: [String: String]

    /// A runner of `executable` (git from PATH when nil) whose git inherits `inherited`, less what must not reach it.
    init(
        executable: String?, timeout: Duration, inherited: [String: String] = ProcessInfo.processInfo.environment
    ) {
        self.executable = URL(fileURLWithPath: executable ?? Self.resolveGit())
        self.timeout = timeout
        self.environment = Self.environment(from: inherited)
    }

    /// Runs `git -C directory arguments` with `extraEnvironment` added, never discovering a repository above `directory`.
    func run(
        in directory: String, _ arguments: [String], extraEnvironment: [String: String] = [:]
    ) throws(BackendError) -> GitOutput {
        // git compares GIT_CEILING_DIRECTORIES with the physical directory `-C` changed to (git(1)): the lexical
        // parent of a symlink would not stop discovery above the symlink's target.
        var physical = directory
        if let resolved = realpath(directory, nil) {
            physical = String(cString: resolved)
            free(resolved)
        }
        let parent = URL(fileURLWithPath: physical).deletingLastPathComponent().path
        return try run(["-C", directory] + arguments, ceiling: parent, extraEnvironment: extraEnvironment)
    }

    /// Runs `git arguments`; `unavailable` when git cannot start or exceeds the timeout, or its stdout
    /// exceeds `maxOutputBytes`. Of stderr only the first and last `keptErrorBytes` are kept.
    func run(
        _ arguments: [String], ceiling: String? = nil, extraEnvironment: [String: String] = [:]
    ) throws(BackendError) -> GitOutput {
        // Output goes through channels this thread drains while git runs, keeping a bounded part: a remote that
        // streams `remote:` lines without end fills neither memory nor the file system, and a full channel never
        // blocks git for long. Socket pairs rather than pipes: SOCK_CLOEXEC sets close-on-exec atomically, so no
        // process another thread starts meanwhile holds an end (Swift's Glibc does not import pipe2).
        var outChannel: [Int32] = [-1, -1]
        var errChannel: [Int32] = [-1, -1]
        var exitChannel: [Int32] = [-1, -1]
        defer { for fd in outChannel + errChannel + exitChannel where fd >= 0 { close(fd) } }
        let type = Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue)
        guard socketpair(AF_UNIX, type, 0, &outChannel) == 0, socketpair(AF_UNIX, type, 0, &errChannel) == 0,
            socketpair(AF_UNIX, type, 0, &exitChannel) == 0,
            fcntl(outChannel[0], F_SETFL, O_NONBLOCK) == 0, fcntl(errChannel[0], F_SETFL, O_NONBLOCK) == 0
        else {
            throw .unavailable(retryable: true, detail: "cannot create channels for git's output")
        }

        var environment = environment.merging(extraEnvironment) { _, extra in extra }
        // A configured path must itself be a repository, not a directory inside one.
        if let ceiling { environment["GIT_CEILING_DIRECTORIES"] = ceiling }
        let pid = try spawn(
            arguments: [executable.path] + Self.maintenanceOptions(for: arguments) + arguments,
            environment: environment.map { "\($0.key)=\($0.value)" },
            stdout: outChannel[1],
            stderr: errChannel[1]
        )
        // Only git may hold the write ends now.
        close(outChannel[1])
        close(errChannel[1])
        outChannel[1] = -1
        errChannel[1] = -1
        // The reaper owns the exit channel from here: it may outlive this call when git cannot be killed (state D), and
        // its write must not reach a descriptor number this process has reused meanwhile.
        let exit = ChildExit(pid: pid, readable: exitChannel[0], writable: exitChannel[1])
        exitChannel = [-1, -1]
        let reaper = Thread { exit.reap() }
        reaper.name = "stovepipe.git-reaper"
        reaper.start()

        let subcommand = arguments.first(where: Self.isSubcommand) ?? ""
        var output = OutputCapture(stdout: outChannel[0], stderr: errChannel[0])
        switch output.pump(until: exit, deadline: .now + timeout) {
        case .exited:
            output.drainAfterExit()
            if output.overflowed { break }
            return GitOutput(
                status: exit.status.withLock { $0 } ?? -1,
                stdout: String(decoding: output.stdout, as: UTF8.self),
                stderr: String(decoding: output.stderr, as: UTF8.self)
            )
        case .deadline:
            stop(exit, draining: &output)
            throw .unavailable(retryable: true, detail: "git \(subcommand) timed out")
        case .overflow:
            // What follows would be read only to be dropped: stop git now rather than at the timeout.
            stop(exit, draining: &output)
        case .failed:
            stop(exit, draining: &output)
            throw .unavailable(retryable: true, detail: "cannot read git \(subcommand)'s output")
        }
        throw .unavailable(retryable: false, detail: "git \(subcommand) printed more than \(Self.maxOutputBytes) bytes")
    }

    /// Stops git and its process group: SIGTERM, and SIGKILL 2 s later; waits 5 s more for the exit, draining its
    /// output meanwhile so that git is never blocked writing while it shuts down.
    private func stop(_ exit: ChildExit, draining output: inout OutputCapture) {
        output.discarding = true
        // git leads its own process group (POSIX_SPAWN_SETPGROUP): signalling the group also stops git's
        // children (ssh, a remote helper), which a terminated git leaves running.
        kill(-exit.pid, SIGTERM)
        if output.pump(until: exit, deadline: .now + .seconds(2)) != .exited {
            kill(-exit.pid, SIGKILL)
            _ = output.pump(until: exit, deadline: .now + .seconds(5))
        }
    }

    /// Options that keep every git this runner starts in the foreground, where the timeout, the process-group kill and
    /// the caller's mirror lock reach it: a fetch starts no automatic gc or maintenance (git-gc(1) `gc.auto`,
    /// git-maintenance(1) `maintenance.auto`), and a `gc` does not detach (`gc.autoDetach`, whose default daemonizes
    /// `gc --auto` in a new session); GitSourceControl runs `gc --auto` itself after a fetch.
    static func maintenanceOptions(for arguments: [String]) -> [String] {
        if arguments.first(where: isSubcommand) == "gc" { return ["-c", "gc.autoDetach=false", "-c", "maintenance.auto=false"] }
        return ["-c", "gc.auto=0", "-c", "maintenance.auto=false"]
    }

    /// The transports git may use (GIT_ALLOW_PROTOCOL, git(1)); GitSourceControl refuses repositories needing another.
    static let allowedTransports = ["file", "git", "http", "https", "ssh"]

    /// The most stdout read back from git; every command this service runs prints far less.
    static let maxOutputBytes = 16 << 20

    /// How much of the start, and of the end, of git's stderr is kept: git's error is a line or two at the end,
    /// after whatever a remote printed.
    static let keptErrorBytes = 8 << 10

    /// Starts `arguments[0]` with stdin /dev/null, the given stdout and stderr, in a new process group, with
    /// default signal actions and an empty signal mask.
    private func spawn(
        arguments: [String], environment: [String], stdout: Int32, stderr: Int32
    ) throws(BackendError) -> pid_t {
        var actions = posix_spawn_file_actions_t()
        guard posix_spawn_file_actions_init(&actions) == 0 else {
            throw .unavailable(retryable: false, detail: "git could not be started")
        }
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        guard posix_spawnattr_init(&attributes) == 0 else {
            throw .unavailable(retryable: false, detail: "git could not be started")
        }
        defer { posix_spawnattr_destroy(&attributes) }

        // Signal dispositions set to SIG_IGN survive exec (execve(2)), and so does the signal mask: `serve`
        // ignores and blocks SIGTERM for its signalfd, and git must not inherit that, or it cannot be stopped
        // cleanly and leaves its lock files behind. SIGKILL and SIGSTOP cannot be reset (sigaction(2)).
        var defaults = sigset_t()
        sigfillset(&defaults)
        sigdelset(&defaults, SIGKILL)
        sigdelset(&defaults, SIGSTOP)
        var mask = sigset_t()
        sigemptyset(&mask)
        let flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP
        guard posix_spawnattr_setsigdefault(&attributes, &defaults) == 0,
            posix_spawnattr_setsigmask(&attributes, &mask) == 0,
            // Group 0: git leads a group of its own, so a kill of the group reaches git's children too.
            posix_spawnattr_setpgroup(&attributes, 0) == 0,
            posix_spawnattr_setflags(&attributes, Int16(flags)) == 0,
            posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0) == 0,
            posix_spawn_file_actions_adddup2(&actions, stdout, STDOUT_FILENO) == 0,
            posix_spawn_file_actions_adddup2(&actions, stderr, STDERR_FILENO) == 0
        else {
            throw .unavailable(retryable: false, detail: "git could not be started")
        }
        // Descriptors without FD_CLOEXEC, opened elsewhere in this process, survive exec (execve(2)) and
        // would reach git: Connector/C's sockets are such, so git could hold a MySQL connection the pool closed.
        // glibc 2.34's addclosefrom_np closes them in the child, after the dup2s, whatever another thread opens
        // meanwhile; before it, the descriptors listed now are closed, and one opened after the listing slips through.
        if let addCloseFrom = Self.addCloseFrom {
            guard addCloseFrom(&actions, STDERR_FILENO + 1) == 0 else {
                throw .unavailable(retryable: false, detail: "git could not be started")
            }
        } else {
            for descriptor in Self.inheritableDescriptors()
            where posix_spawn_file_actions_addclose(&actions, descriptor) != 0 {
                throw .unavailable(retryable: false, detail: "git could not be started")
            }
        }

        let argv = arguments.map { strdup($0) }
        defer { argv.forEach { free($0) } }
        let envp = environment.map { strdup($0) }
        defer { envp.forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, executable.path, &actions, &attributes, argv + [nil], envp + [nil])
        guard spawned == 0 else {
            // posix_spawn(3) returns the errno: out of processes, memory or descriptors passes; a missing or
            // unrunnable git does not.
            let passing = [EAGAIN, ENOMEM, EMFILE, ENFILE].contains(spawned)
            throw .unavailable(retryable: passing, detail: "git could not be started")
        }
        return pid
    }

    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), looked up at run time: Swift's Glibc
    /// module does not import it, and an older glibc must still run the binary.
    private static let addCloseFrom: AddCloseFrom? = {
        #if canImport(Glibc)
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
        else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
        #else
        return nil
        #endif
    }()

    /// This process's open descriptors above 2 that exec would not close.
    private static func inheritableDescriptors() -> [Int32] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return names.compactMap(Int32.init).filter { descriptor in
            guard descriptor > STDERR_FILENO else { return false }
            let flags = fcntl(descriptor, F_GETFD)
            // -1: the descriptor the listing itself used, closed by now.
            return flags >= 0 && flags & FD_CLOEXEC == 0
        }
    }

    private static func isSubcommand(_ argument: String) -> Bool {
        ["rev-parse", "merge-base", "rev-list", "fetch", "init", "gc"].contains(argument)
    }

    private static func resolveGit() -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") where !directory.isEmpty {
            let candidate = "\(directory)/git"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return "/usr/bin/git"
    }

    private static func environment(from inherited: [String: String]) -> [String: String] {
        // Variables that would point git at another repository than the one named in the arguments, or change what
        // it reads there: git's own list of them (`git rev-parse --local-env-vars`, git-rev-parse(1), which git
        // itself clears before it runs another repository's commands), plus the namespace and ceiling. A shallow
        // or graft file among them cuts or rewires history, and ancestry answers turn wrong.
        let relocating: Set<String> = [
            "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
            "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
            "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX", "GIT_INTERNAL_SUPER_PREFIX",
            "GIT_SHALLOW_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
        ]
        // stovepipe's own settings hold secrets (the ingest secret, the MySQL URL's password) that git, ssh and
        // credential helpers have no use for.
        var environment = inherited.filter { !relocating.contains($0.key) && !$0.key.hasPrefix("STOVEPIPE_") }
        environment["GIT_TERMINAL_PROMPT"] = "0"
        environment["GCM_INTERACTIVE"] = "never"
        environment["LC_ALL"] = "C"
        // git's protocol.allow default already refuses ext::; this also pins the transports to the usual four.
        environment["GIT_ALLOW_PROTOCOL"] = allowedTransports.joined(separator: ":")
        if environment["GIT_SSH_COMMAND"] == nil {
            environment["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        }
        return environment
    }
}

/// One spawned child and its exit status, which `reap` sets, once, when the child has exited.
private final class ChildExit: Sendable {
    let pid: pid_t
    /// Readable once the child has been reaped: `reap` writes a byte to the socket pair's other end.
    let readable: Int32
    private let writable: Int32
    /// The exit code, or the signal number for a child a signal ended, as Process.terminationStatus has it.
    let status = Mutex<Int32?>(nil)

    init(pid: pid_t, readable: Int32, writable: Int32) {
        self.pid = pid
        self.readable = readable
        self.writable = writable
    }

    deinit {
        close(readable)
        close(writable)
    }

    /// Blocks until the child exits, records its status and makes `readable` readable.
    func reap() {
        var raw: Int32 = 0
        var reaped: pid_t
        repeat {
            // Only this pid: waitpid(-1) could reap children other code in this process waits for.
            reaped = waitpid(pid, &raw, 0)
        } while reaped == -1 && errno == EINTR
        if reaped == pid {
            // waitpid(2): the low 7 bits are the terminating signal, 0 for a normal exit, whose code is in
            // bits 8-15 (WIFEXITED, WEXITSTATUS, WTERMSIG are macros Swift does not import).
            let signal = raw & 0x7f
            status.withLock { $0 = signal == 0 ? (raw >> 8) & 0xff : signal }
        }
        var byte: UInt8 = 1
        // One byte into an empty socket buffer: it cannot block or be short.
        _ = write(writable, &byte, 1)
    }
}

/// Reads git's stdout and stderr from the non-blocking read ends of their channels, keeping at most
/// `GitRunner.maxOutputBytes` of stdout and the first and last `GitRunner.keptErrorBytes` of stderr.
private struct OutputCapture {
    enum Outcome { case exited, deadline, overflow, failed }

    /// The read ends not yet at their end; -1 once closed, which poll(2) skips.
    private var descriptors: [Int32]
    private(set) var stdout: [UInt8] = []
    private(set) var overflowed = false
    private var errorHead: [UInt8] = []
    private var errorTail: [UInt8] = []
    private var errorDropped = 0
    /// Set once git is being stopped: what it prints then is read and dropped.
    var discarding = false
    private var buffer = [UInt8](repeating: 0, count: 64 << 10)

    init(stdout: Int32, stderr: Int32) { descriptors = [stdout, stderr] }

    /// stderr as kept: its start, a note of how much was left out, and its end from the first whole line on.
    var stderr: [UInt8] {
        guard errorDropped > 0 else { return errorHead + errorTail }
        var tail = errorTail.suffix(GitRunner.keptErrorBytes)
        if let newline = tail.firstIndex(of: UInt8(ascii: "\n")) { tail = tail[(newline + 1)...] }
        let skipped = errorDropped + (errorTail.count - tail.count)
        return errorHead + Array("\n[\(skipped) bytes of git's output left out]\n".utf8) + tail
    }

    /// Reads what git prints until it has exited, `deadline` passes, or stdout goes beyond its limit.
    mutating func pump(until exit: ChildExit, deadline: ContinuousClock.Instant) -> Outcome {
        while true {
            let remaining = deadline - .now
            guard remaining > .zero else { return .deadline }
            let (seconds, attoseconds) = remaining.components
            let milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
            var polled = (descriptors + [exit.readable]).map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&polled, nfds_t(polled.count), milliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return .failed
            }
            // One read per ready stream and wake-up: a stream that never pauses cannot hold this loop past the deadline.
            for index in descriptors.indices where polled[index].revents != 0 {
                readOnce(index)
                // Once git is being stopped the limit has done its work: what counts then is its exit.
                if overflowed && !discarding { return .overflow }
            }
            if polled[descriptors.count].revents != 0 { return .exited }
        }
    }

    /// Reads what git left in the channels when it exited; a child of git that outlives it and still writes is not
    /// waited for.
    mutating func drainAfterExit() {
        // A socket buffer holds at most net.core.wmem_max + rmem_max (a few MiB, socket(7)): more than that can only
        // come from a descendant still writing.
        var budget = 16 << 20
        for index in descriptors.indices {
            while descriptors[index] >= 0, budget > 0, !overflowed {
                let count = readOnce(index)
                guard count > 0 else { break }
                budget -= count
            }
        }
    }

    /// Reads once from stream `index` (0 stdout, 1 stderr); the bytes read, 0 at its end or when nothing is ready.
    @discardableResult
    private mutating func readOnce(_ index: Int) -> Int {
        let fd = descriptors[index]
        guard fd >= 0 else { return 0 }
        let count = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if count < 0 {
            // EAGAIN: nothing yet; EINTR: try again on the next wake-up. Anything else ends the stream.
            if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { descriptors[index] = -1 }
            return 0
        }
        if count == 0 {
            // The descriptor itself is GitRunner's to close.
            descriptors[index] = -1
            return 0
        }
        guard !discarding else { return count }
        let bytes = buffer[0..<count]
        if index == 0 {
            guard stdout.count + count <= GitRunner.maxOutputBytes else {
                overflowed = true
                return count
            }
            stdout.append(contentsOf: bytes)
        } else {
            let keep = GitRunner.keptErrorBytes
            let toHead = min(keep - errorHead.count, count)
            errorHead.append(contentsOf: bytes.prefix(toHead))
            errorTail.append(contentsOf: bytes.dropFirst(toHead))
            if errorTail.count > 2 * keep {
                let excess = errorTail.count - keep
                errorTail.removeFirst(excess)
                errorDropped += excess
            }
        }
        return count
    }
}
