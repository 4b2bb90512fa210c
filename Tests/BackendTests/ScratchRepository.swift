import Foundation
import Logging

/// A git command of a test that failed.
struct GitCommandFailed: Error, CustomStringConvertible {
    let arguments: [String]
    let status: Int32
    let stderr: String
    var description: String { "git \(arguments.joined(separator: " ")) exited \(status): \(stderr)" }
}

/// A throwaway repository in a temporary directory, written with the git command line.
struct ScratchRepository: Sendable {
    /// The directory of the repository.
    let path: String

    /// `git init` on branch `main` in a fresh temporary directory.
    init() throws {
        path = try makeScratchDirectory("repo")
        try git("init", "--quiet", "--initial-branch=main")
    }

    /// `file://` URL of the repository.
    var fileURL: String { "file://" + path }

    /// Runs git in the repository with a fixed identity; returns stdout without the trailing newline.
    @discardableResult
    func git(_ arguments: String...) throws -> String {
        try runGit(["-C", path, "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"] + arguments)
    }

    /// Makes an empty commit on the checked-out branch and returns its id.
    @discardableResult
    func commit(_ message: String) throws -> String {
        try git("commit", "--quiet", "--allow-empty", "-m", message)
        return try git("rev-parse", "HEAD")
    }

    /// Deletes the directory.
    func remove() {
        try? FileManager.default.removeItem(atPath: path)
    }
}

/// A new empty directory under the temporary directory.
func makeScratchDirectory(_ label: String) throws -> String {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-\(label)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url.path
}

/// Runs git with `arguments`, failing on a non-zero exit.
@discardableResult
func runGit(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["git"] + arguments
    var environment = ProcessInfo.processInfo.environment
    environment["GIT_CONFIG_NOSYSTEM"] = "1"
    environment["GIT_CONFIG_GLOBAL"] = "/dev/null"
    environment["GIT_TERMINAL_PROMPT"] = "0"
    process.environment = environment
    process.standardInput = FileHandle.nullDevice
    let out = Pipe()
    let err = Pipe()
    process.standardOutput = out
    process.standardError = err
    try process.run()
    // The commands of these tests print a few lines at most, far below a pipe's buffer.
    let stdout = out.fileHandleForReading.readDataToEndOfFile()
    let stderr = err.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw GitCommandFailed(
            arguments: arguments, status: process.terminationStatus, stderr: String(decoding: stderr, as: UTF8.self)
        )
    }
    return String(decoding: stdout, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A logger that drops everything.
let silentLogger = Logger(label: "backend-tests", factory: { _ in SwiftLogNoOpLogHandler() })
