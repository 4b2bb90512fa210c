import Logging

/// Keeps each line at `logLevel` or above as its message followed by its metadata (the logger's and the event's) as
/// sorted `key=value` fields.
public struct LineRecorder: LogHandler {
    /// The lines kept, in order.
    public let lines: Recorder<String>
    /// The lowest level kept.
    public var logLevel: Logger.Level
    /// The logger's own metadata.
    public var metadata: Logger.Metadata = [:]

    /// Keeps lines at `logLevel` or above in `lines`.
    public init(lines: Recorder<String>, logLevel: Logger.Level = .info) {
        self.lines = lines
        self.logLevel = logLevel
    }

    /// The logger's metadata value for `key`.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Keeps the event as one line.
    public func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        lines.append(([event.message.description] + merged.map { "\($0.key)=\($0.value)" }.sorted()).joined(separator: " "))
    }
}
