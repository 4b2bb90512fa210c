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
        // Decoded in place, not through JSONSerialization: its tree of Foundation objects took 36 times the file's
        // size at its peak (2.1 GB for a file near the limit), the decoder a few times.
        do {
            return try JSONDecoder().decode(Document.self, from: data).configuration
        } catch let error as Invalid {
            throw error
        } catch {
            throw Invalid(place: "$", problem: "not valid JSON (\(syntaxProblem(data) ?? "\(error)"))")
        }
    }

    /// Where and why `data` is not JSON, as JSONSerialization says it ("Invalid value around character 8."): the
    /// decoder only says that it is not. Only for a document that failed, on the way to stopping start-up.
    private static func syntaxProblem(_ data: Data) -> String? {
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: .fragmentsAllowed)
            return nil
        } catch {
            return (error as NSError).userInfo["NSDebugDescription"] as? String
        }
    }

    /// Any key of a JSON object.
    private struct Key: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
        init(_ name: String) { stringValue = name }
    }

    /// The whole document, validated while it is decoded; decoding throws `Invalid`.
    private struct Document: Decodable {
        let configuration: QueueConfiguration

        init(from decoder: any Decoder) throws {
            guard let object = try? decoder.container(keyedBy: Key.self) else {
                throw Invalid(place: "$", problem: "must be a JSON object")
            }
            guard var queues = try? object.nestedUnkeyedContainer(forKey: Key("queues")) else {
                throw Invalid(place: "$.queues", problem: "must be an array of queues")
            }
            // Like an empty STOVEPIPE_MYSQL_URL, more likely a template's gap than a wish for a server that answers
            // 404 to every ingest.
            guard !queues.isAtEnd else { throw Invalid(place: "$.queues", problem: "is empty: list at least one queue") }
            var entries: [Entry] = []
            var seen: Set<QueueName> = []
            while !queues.isAtEnd {
                let place = "$.queues[\(queues.currentIndex)]"
                guard let queue = try? queues.superDecoder().container(keyedBy: Key.self) else {
                    throw Invalid(place: place, problem: "must be an object")
                }
                guard let rawName = try? queue.decode(String.self, forKey: Key("name")) else {
                    throw Invalid(place: "\(place).name", problem: "must be a string")
                }
                let name: QueueName
                do { name = try QueueName(rawName) } catch { throw Invalid(place: "\(place).name", problem: error.description) }
                guard seen.insert(name).inserted else {
                    throw Invalid(place: "\(place).name", problem: "queue '\(name)' is configured twice")
                }
                let source = try? queue.nestedContainer(keyedBy: Key.self, forKey: Key("source"))
                entries.append(Entry(name: name, source: try QueueConfiguration.source(source, place: "\(place).source")))
            }
            configuration = QueueConfiguration(entries: entries)
        }
    }

    private static func source(_ value: KeyedDecodingContainer<Key>?, place: String) throws(Invalid) -> SourceConfig {
        guard let source = value else { throw Invalid(place: place, problem: "must be an object") }
        func string(_ key: String) -> String? { try? source.decode(String.self, forKey: Key(key)) }
        switch string("type") {
        case "git":
            guard let repository = string("repository"), !repository.isEmpty else {
                throw Invalid(place: "\(place).repository", problem: "must be a non-empty string (a path or URL)")
            }
            // What GitSourceControl would refuse to hand to git, leaving a queue that answers 404 forever.
            if let problem = GitSourceControl.repositoryProblem(repository) {
                throw Invalid(place: "\(place).repository", problem: problem)
            }
            guard let ref = string("ref"), !ref.isEmpty else {
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
            guard var history = try? source.nestedUnkeyedContainer(forKey: Key("history")), !history.isAtEnd else {
                throw Invalid(place: "\(place).history", problem: "must be a non-empty array of URIs, newest first")
            }
            var uris: [SourceURI] = []
            while !history.isAtEnd {
                let index = history.currentIndex
                guard let uri = try? history.decode(String.self), !uri.isEmpty else {
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
