import Logging

/// A log handler that also takes a line's metadata as string pairs already sorted by key, for the per-request
/// line: building, hashing and sorting a metadata dictionary per request costs more than writing the line.
public protocol SortedFieldsLogHandler: LogHandler {
    /// Writes `message` at `level` (the caller checked `logLevel`) with `sortedFields`, whose keys are unique and
    /// ascending, merged with the handler's own metadata exactly as `log(event:)` would merge that metadata.
    func log(level: Logger.Level, message: String, sortedFields: [(key: String, value: String)])
}
