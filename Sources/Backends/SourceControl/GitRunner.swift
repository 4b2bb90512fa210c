import Domain
import Foundation

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

    init(executable: String?, timeout: Duration) {
        self.executable = URL(fileURLWithPath: executable ?? Self.resolveGit())
        self.timeout = timeout
        self.environment = Self.environment(from: ProcessInfo.processInfo.environment)
    }

    /// Runs `git -C directory arguments`, never discovering a repository above `directory`.
    func run(in directory: String, _ arguments: [String]) throws(BackendError) -> GitOutput {
        let parent = URL(fileURLWithPath: directory).deletingLastPathComponent().path
        return try run(["-C", directory] + arguments, ceiling: parent)
    }

    /// Runs `git arguments`; `unavailable` when git cannot start or exceeds the timeout.
    func run(_ arguments: [String], ceiling: String? = nil) throws(BackendError) -> GitOutput {
        let scratch = FileManager.default.temporaryDirectory
        let token = UUID().uuidString
        let outPath = scratch.appendingPathComponent("stovepipe-git-\(token).out").path
        let errPath = scratch.appendingPathComponent("stovepipe-git-\(token).err").path
        defer {
            try? FileManager.default.removeItem(atPath: outPath)
            try? FileManager.default.removeItem(atPath: errPath)
        }
        // Output goes to files rather than pipes: a full pipe cannot block git, and nothing has to be
        // drained concurrently; after a timeout, grandchildren holding the descriptors cannot block us.
        guard FileManager.default.createFile(atPath: outPath, contents: nil),
            FileManager.default.createFile(atPath: errPath, contents: nil),
            let outHandle = FileHandle(forWritingAtPath: outPath),
            let errHandle = FileHandle(forWritingAtPath: errPath)
        else {
            throw .unavailable(retryable: true, detail: "cannot create git output files")
        }
        defer {
            try? outHandle.close()
            try? errHandle.close()
        }

        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        var environment = environment
        // A configured path must itself be a repository, not a directory inside one.
        if let ceiling { environment["GIT_CEILING_DIRECTORIES"] = ceiling }
        process.environment = environment
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = outHandle
        process.standardError = errHandle
        let exited = DispatchSemaphore(value: 0)
        process.terminationHandler = { _ in exited.signal() }
        do {
            try process.run()
        } catch {
            throw .unavailable(retryable: false, detail: "git could not be started")
        }

        if exited.wait(timeout: .now() + Self.dispatchInterval(timeout)) == .timedOut {
            // Process starts git as the leader of its own process group: signalling the group also stops git's
            // children (ssh, a remote helper), which a terminated git leaves running.
            let pid = process.processIdentifier
            let target = getpgid(pid) == pid ? -pid : pid
            kill(target, SIGTERM)
            if exited.wait(timeout: .now() + .seconds(2)) == .timedOut {
                kill(target, SIGKILL)
                _ = exited.wait(timeout: .now() + .seconds(5))
            }
            throw .unavailable(retryable: true, detail: "git \(arguments.first(where: Self.isSubcommand) ?? "") timed out")
        }
        let stdout = FileManager.default.contents(atPath: outPath) ?? Data()
        let stderr = FileManager.default.contents(atPath: errPath) ?? Data()
        return GitOutput(
            status: process.terminationStatus,
            stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self)
        )
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
        // Variables that would point git at another repository than the one named in the arguments.
        let relocating: Set<String> = [
            "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_CEILING_DIRECTORIES",
        ]
        var environment = inherited.filter { !relocating.contains($0.key) }
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
