import Backends
import Domain
import Foundation

/// The queues file: `{"queues": [{"name": ..., "source": {"type": "git"|"static", ...}}]}`.
struct QueueConfiguration: Sendable, Equatable {
    struct Entry: Sendable, Equatable {
        let name: QueueName
        let source: SourceConfig
    }

    let entries: [Entry]

    /// A problem in the queues file, with where it is.
    struct Invalid: Error, CustomStringConvertible {
        let place: String
        let problem: String
        var description: String { "\(place): \(problem)" }
    }

    /// The built-in demo queue used when no file is given, so that a first curl works.
    static func demo() throws(ValidationError) -> QueueConfiguration {
        QueueConfiguration(entries: [
            Entry(
                name: try QueueName("demo/main"),
                source: .staticHistory([SourceURI("git://demo/main/c3"), SourceURI("git://demo/main/c2"), SourceURI("git://demo/main/c1")]))
        ])
    }

    /// The largest queues file read: 64 MiB. 60,000 queues are 6 MB (static) to 16 MB (git, long URLs, indented).
    static let maxFileBytes = 64 << 20

    /// Reads and validates the file at `path`, refusing one of more than `maxBytes`.
    static func load(path: String, maxBytes: Int = maxFileBytes) throws(Invalid) -> QueueConfiguration {
        let data = try contents(of: path, maxBytes: maxBytes)
        do {
            return try parse(data)
        } catch {
            throw Invalid(place: "\(path): \(error.place)", problem: error.problem)
        }
    }

    /// The bytes of the file at `path`, read no further than one byte past `maxBytes`.
    private static func contents(of path: String, maxBytes: Int) throws(Invalid) -> Data {
        let limit = "a queues file may have at most \(maxBytes) bytes"
        do throws(BoundedFile.Failure) {
            return Data(try BoundedFile.read(path, maxBytes: maxBytes, regularFileOnly: false))
        } catch {
            switch error {
            case .system(let code): throw Invalid(place: path, problem: "cannot be read: \(String(cString: strerror(code)))")
            case .notRegularFile: throw Invalid(place: path, problem: "cannot be read: not a regular file")
            case .tooLarge(let size): throw Invalid(place: path, problem: "is \(size) bytes; \(limit)")
            case .grewPastLimit: throw Invalid(place: path, problem: "has more than \(maxBytes) bytes; \(limit)")
            }
        }
    }

    /// Parses and validates a queues document.
    static func parse(_ data: Data) throws(Invalid) -> QueueConfiguration {
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: data)
        } catch {
            let detail = (error as NSError).userInfo["NSDebugDescription"] as? String ?? "not valid JSON"
            throw Invalid(place: "$", problem: "not valid JSON (\(detail))")
        }
        guard let object = root as? [String: Any] else { throw Invalid(place: "$", problem: "must be a JSON object") }
        guard let queues = object["queues"] as? [Any] else {
            throw Invalid(place: "$.queues", problem: "must be an array of queues")
        }
        // Like an empty STOVEPIPE_MYSQL_URL, more likely a template's gap than a wish for a server that answers 404 to
        // every ingest.
        guard !queues.isEmpty else { throw Invalid(place: "$.queues", problem: "is empty: list at least one queue") }
        var entries: [Entry] = []
        var seen: Set<QueueName> = []
        for (index, item) in queues.enumerated() {
            let place = "$.queues[\(index)]"
            guard let queue = item as? [String: Any] else { throw Invalid(place: place, problem: "must be an object") }
            guard let rawName = ownedString(queue["name"]) else {
                throw Invalid(place: "\(place).name", problem: "must be a string")
            }
            let name: QueueName
            do { name = try QueueName(rawName) } catch { throw Invalid(place: "\(place).name", problem: error.description) }
            guard seen.insert(name).inserted else {
                throw Invalid(place: "\(place).name", problem: "queue '\(name)' is configured twice")
            }
            entries.append(Entry(name: name, source: try source(queue["source"], place: "\(place).source")))
        }
        return QueueConfiguration(entries: entries)
    }

    /// `value` as a string of its own, or nil when it is not a string.
    private static func ownedString(_ value: Any?) -> String? {
        // On Linux a String cast from a JSONSerialization value keeps the whole parsed document alive (32 MB for a
        // file of 10,000 queues, kept while the server runs); a copy of its bytes does not.
        guard let string = value as? String else { return nil }
        return String(decoding: Array(string.utf8), as: UTF8.self)
    }

    private static func source(_ value: Any?, place: String) throws(Invalid) -> SourceConfig {
        guard let source = value as? [String: Any] else { throw Invalid(place: place, problem: "must be an object") }
        switch source["type"] as? String {
        case "git":
            guard let repository = ownedString(source["repository"]), !repository.isEmpty else {
                throw Invalid(place: "\(place).repository", problem: "must be a non-empty string (a path or URL)")
            }
            // What GitSourceControl would refuse to hand to git, leaving a queue that answers 404 forever.
            if let problem = GitSourceControl.repositoryProblem(repository) {
                throw Invalid(place: "\(place).repository", problem: problem)
            }
            guard let ref = ownedString(source["ref"]), !ref.isEmpty else {
                throw Invalid(place: "\(place).ref", problem: "must be a non-empty string such as refs/heads/main")
            }
            guard GitSourceControl.isValidRef(ref) else {
                throw Invalid(
                    place: "\(place).ref",
                    problem: "must be a branch or ref name that git check-ref-format accepts, of A-Z a-z 0-9 . _ - / (no component starting with '-', not HEAD)")
            }
            guard GitSourceControl.longestURILength(repository: repository, ref: ref) <= SourceURI.maxLength else {
                throw Invalid(
                    place: place,
                    problem: "repository and ref make commit URIs longer than \(SourceURI.maxLength) characters")
            }
            return .git(repository: repository, ref: ref)
        case "static":
            guard let history = source["history"] as? [Any], !history.isEmpty else {
                throw Invalid(place: "\(place).history", problem: "must be a non-empty array of URIs, newest first")
            }
            var uris: [SourceURI] = []
            for (index, item) in history.enumerated() {
                guard let uri = ownedString(item), !uri.isEmpty else {
                    throw Invalid(place: "\(place).history[\(index)]", problem: "must be a non-empty string")
                }
                if let problem = SourceURI.storageProblem(uri) {
                    throw Invalid(place: "\(place).history[\(index)]", problem: problem)
                }
                uris.append(SourceURI(uri))
            }
            return .staticHistory(uris)
        case let other:
            throw Invalid(place: "\(place).type", problem: "must be \"git\" or \"static\", not \(other.map { "\"\($0)\"" } ?? "missing")")
        }
    }
}
