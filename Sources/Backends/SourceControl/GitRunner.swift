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

    /// Runs `git arguments`; `unavailable` when git cannot start or exceeds the timeout, or its output
    /// exceeds `maxOutputBytes`.
    func run(
        _ arguments: [String], ceiling: String? = nil, extraEnvironment: [String: String] = [:]
    ) throws(BackendError) -> GitOutput {
        // Output goes to files rather than pipes: a full pipe cannot block git, and nothing has to be
        // drained concurrently; after a timeout, grandchildren holding the descriptors cannot block us.
        let outFD = Self.anonymousFile()
        defer { if outFD >= 0 { close(outFD) } }
        let errFD = Self.anonymousFile()
        defer { if errFD >= 0 { close(errFD) } }
        guard outFD >= 0, errFD >= 0 else {
            throw .unavailable(retryable: true, detail: "cannot create git output files")
        }

        var environment = environment.merging(extraEnvironment) { _, extra in extra }
        // A configured path must itself be a repository, not a directory inside one.
        if let ceiling { environment["GIT_CEILING_DIRECTORIES"] = ceiling }
        let exit = try spawn(
            arguments: [executable.path] + arguments,
            environment: environment.map { "\($0.key)=\($0.value)" },
            stdout: outFD,
            stderr: errFD
        )

        let subcommand = arguments.first(where: Self.isSubcommand) ?? ""
        if exit.done.wait(timeout: .now() + Self.dispatchInterval(timeout)) == .timedOut {
            // git leads its own process group (POSIX_SPAWN_SETPGROUP): signalling the group also stops git's
            // children (ssh, a remote helper), which a terminated git leaves running.
            kill(-exit.pid, SIGTERM)
            if exit.done.wait(timeout: .now() + .seconds(2)) == .timedOut {
                kill(-exit.pid, SIGKILL)
                _ = exit.done.wait(timeout: .now() + .seconds(5))
            }
            throw .unavailable(retryable: true, detail: "git \(subcommand) timed out")
        }
        guard let stdout = Self.contents(of: outFD), let stderr = Self.contents(of: errFD) else {
            throw .unavailable(retryable: false, detail: "git \(subcommand) printed more than \(Self.maxOutputBytes) bytes")
        }
        return GitOutput(
            status: exit.status.withLock { $0 } ?? -1,
            stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self)
        )
    }

    /// The most output of one stream read back from git; every command this service runs prints far less.
    static let maxOutputBytes = 16 << 20

    /// A read-write file with no name left in the file system, or -1: unlinked at once, it cannot be left
    /// behind by a process that exits (or is killed) while git runs.
    private static func anonymousFile() -> Int32 {
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("stovepipe-git-\(UUID().uuidString)").path
        // O_EXCL and mode 0600: the name is in the shared temporary directory for an instant (open(2)).
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd >= 0 { unlink(path) }
        return fd
    }

    /// What was written to `fd` from its start, or nil when that is more than `maxOutputBytes`.
    private static func contents(of fd: Int32) -> [UInt8]? {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 << 10)
        var offset: off_t = 0
        while true {
            let count = chunk.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, offset) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return bytes }
            guard bytes.count + count <= maxOutputBytes else { return nil }
            bytes.append(contentsOf: chunk[0..<count])
            offset += off_t(count)
        }
    }

    /// Starts `arguments[0]` with stdin /dev/null, the given stdout and stderr, in a new process group, with
    /// default signal actions and an empty signal mask; a thread of its own reaps it.
    private func spawn(
        arguments: [String], environment: [String], stdout: Int32, stderr: Int32
    ) throws(BackendError) -> ChildExit {
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

        let exit = ChildExit(pid: pid)
        let reaper = Thread { exit.reap() }
        reaper.name = "stovepipe.git-reaper"
        reaper.start()
        return exit
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
        ["rev-parse", "merge-base", "rev-list", "fetch", "init"].contains(argument)
    }

    private static func dispatchInterval(_ duration: Duration) -> DispatchTimeInterval {
        let parts = duration.components
        let nanoseconds = max(0, parts.seconds) * 1_000_000_000 + max(0, parts.attoseconds) / 1_000_000_000
        return .nanoseconds(Int(clamping: nanoseconds))
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
        environment["GIT_ALLOW_PROTOCOL"] = "file:git:http:https:ssh"
        if environment["GIT_SSH_COMMAND"] == nil {
            environment["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
        }
        return environment
    }
}

/// One spawned child and its exit status, which `reap` sets, once, when the child has exited.
private final class ChildExit: Sendable {
    let pid: pid_t
    /// Signalled once the child has been reaped.
    let done = DispatchSemaphore(value: 0)
    /// The exit code, or the signal number for a child a signal ended, as Process.terminationStatus has it.
    let status = Mutex<Int32?>(nil)

    init(pid: pid_t) { self.pid = pid }

    /// Blocks until the child exits, records its status and signals `done`.
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
        done.signal()
    }
}
