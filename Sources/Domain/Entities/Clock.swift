import struct Foundation.Date

/// Where controllers read the time; tests pin it.
public struct WallClock: Sendable {
    private let read: @Sendable () -> Date

    /// The system clock, truncated to whole microseconds so that every backend (MySQL keeps
    /// DATETIME(6)) stores exactly what it was given.
    public static let system = WallClock {
        let micros = (Date().timeIntervalSince1970 * 1_000_000).rounded(.down)
        return Date(timeIntervalSince1970: micros / 1_000_000)
    }

    /// A clock that reads `read`.
    public init(_ read: @escaping @Sendable () -> Date) { self.read = read }

    /// The current time.
    public func now() -> Date { read() }
}
