import Foundation

/// A configuration file read whole at start-up, never more than a limit of it.
enum BoundedFile {
    /// Why a file was not read.
    enum Failure: Error {
        /// open, fstat or read failed with this errno.
        case system(Int32)
        /// Not a regular file, where one is required.
        case notRegularFile
        /// fstat gave this size, above the limit.
        case tooLarge(size: Int64)
        /// More than the limit arrived (a file that grew since fstat, or one with no size such as a pipe).
        case grewPastLimit
    }

    /// The bytes of the file at `path`, read no further than one byte past `maxBytes`.
    static func read(_ path: String, maxBytes: Int, regularFileOnly: Bool) throws(Failure) -> [UInt8] {
        // O_NONBLOCK: opening a FIFO would otherwise wait for a writer; it changes nothing for a regular file.
        let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | (regularFileOnly ? O_NONBLOCK : 0))
        guard descriptor >= 0 else { throw .system(errno) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw .system(errno) }
        if regularFileOnly, status.st_mode & S_IFMT != S_IFREG { throw .notRegularFile }
        // Refused before any of it is read: parsing takes many times a file's size in memory.
        guard Int(status.st_size) <= maxBytes else { throw .tooLarge(size: Int64(status.st_size)) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Int(status.st_size))
        var chunk = [UInt8](repeating: 0, count: min(1 << 16, maxBytes + 1))
        while true {
            // One byte past the limit tells a file that grew beyond it since fstat (or a pipe) from one that ends there.
            let wanted = min(chunk.count, maxBytes + 1 - bytes.count)
            let count = chunk.withUnsafeMutableBytes { Foundation.read(descriptor, $0.baseAddress, wanted) }
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw .system(errno) }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[..<count])
            guard bytes.count <= maxBytes else { throw .grewPastLimit }
        }
    }
}
