import struct Foundation.Date

/// One value bound to a `?` placeholder or read from a result column.
public enum MySQLValue: Sendable, Hashable {
    /// SQL NULL.
    case null
    /// A signed integer (TINYINT to BIGINT).
    case int64(Int64)
    /// An unsigned integer (TINYINT UNSIGNED to BIGINT UNSIGNED).
    case uint64(UInt64)
    /// A FLOAT or DOUBLE.
    case double(Double)
    /// Text in the connection's character set (utf8mb4); DECIMAL and TIME columns also read as text.
    case string(String)
    /// Binary data (BINARY, VARBINARY, BLOB, BIT); a row's integer and Bool accessors read BIT as a number.
    case bytes([UInt8])
    /// A DATE, DATETIME or TIMESTAMP.
    case dateTime(MySQLDateTime)

    /// True for `.null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension MySQLValue: CustomStringConvertible {
    /// The kind of value only: values may be secrets or user data, so they are never printed.
    public var description: String {
        switch self {
        case .null: "NULL"
        case .int64: "int64(...)"
        case .uint64: "uint64(...)"
        case .double: "double(...)"
        case .string: "string(...)"
        case .bytes: "bytes(...)"
        case .dateTime: "dateTime(...)"
        }
    }
}

/// A calendar date and wall-clock time with microseconds, as DATETIME(6) stores it; no time zone.
///
/// Connections set the session time zone to UTC, so TIMESTAMP columns read and write UTC too.
public struct MySQLDateTime: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The year, 0...9999.
    public var year: Int
    /// The month, 1...12 (0 only in zero dates).
    public var month: Int
    /// The day of the month, 1...31 (0 only in zero dates).
    public var day: Int
    /// The hour, 0...23.
    public var hour: Int
    /// The minute, 0...59.
    public var minute: Int
    /// The second, 0...59.
    public var second: Int
    /// The fraction of the second in microseconds, 0...999_999.
    public var microsecond: Int

    /// Makes a date-time from its fields, stored as given; binding one with a field out of range fails with `invalidArgument`.
    public init(year: Int, month: Int, day: Int, hour: Int = 0, minute: Int = 0, second: Int = 0, microsecond: Int = 0) {
        self.year = year
        self.month = month
        self.day = day
        self.hour = hour
        self.minute = minute
        self.second = second
        self.microsecond = microsecond
    }

    /// The UTC date-time of `date`, rounded to the nearest microsecond (what DATETIME(6) keeps); a date beyond
    /// 64 bits of microseconds, or not a number, gives a year no DATETIME holds, which binding refuses.
    public init(_ date: Date) {
        // Rounding to nearest absorbs the floating-point error of timeIntervalSince1970, so a Date made
        // from whole microseconds maps back to exactly those microseconds.
        guard let totalMicroseconds = Int64(exactly: (date.timeIntervalSince1970 * 1_000_000).rounded()) else {
            self.init(year: Int.min, month: 1, day: 1)
            return
        }
        let (days, microsecondOfDay) = Self.floorDivide(totalMicroseconds, 86_400_000_000)
        let (year, month, day) = Self.civilDate(daysSinceEpoch: days)
        let secondsOfDay = microsecondOfDay / 1_000_000
        self.init(
            year: Int(year), month: Int(month), day: Int(day), hour: Int(secondsOfDay / 3600),
            minute: Int(secondsOfDay / 60 % 60), second: Int(secondsOfDay % 60),
            microsecond: Int(microsecondOfDay % 1_000_000))
    }

    /// The instant this date-time names when read as UTC.
    public var date: Date {
        let days = Self.daysSinceEpoch(year: Int64(year), month: Int64(month), day: Int64(day))
        let seconds = days * 86_400 + Int64(hour) * 3600 + Int64(minute) * 60 + Int64(second)
        // One division of an exact integer count of microseconds: the same Date as
        // `Date(timeIntervalSince1970: micros / 1_000_000)`, the way microsecond clocks build it.
        return Date(timeIntervalSince1970: Double(seconds * 1_000_000 + Int64(microsecond)) / 1_000_000)
    }

    /// `YYYY-MM-DD hh:mm:ss.ffffff`.
    public var description: String {
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2)) \(pad(hour, 2)):\(pad(minute, 2)):\(pad(second, 2))"
            + ".\(pad(microsecond, 6))"
    }

    /// Chronological order.
    public static func < (lhs: Self, rhs: Self) -> Bool {
        let left = (lhs.year, lhs.month, lhs.day, lhs.hour, lhs.minute, lhs.second)
        let right = (rhs.year, rhs.month, rhs.day, rhs.hour, rhs.minute, rhs.second)
        return left < right || (left == right && lhs.microsecond < rhs.microsecond)
    }

    private static func floorDivide(_ value: Int64, _ divisor: Int64) -> (Int64, Int64) {
        let quotient = value / divisor
        let remainder = value % divisor
        return remainder < 0 ? (quotient - 1, remainder + divisor) : (quotient, remainder)
    }

    // Howard Hinnant's days_from_civil / civil_from_days: exact proleptic Gregorian arithmetic without Calendar.
    private static func daysSinceEpoch(year: Int64, month: Int64, day: Int64) -> Int64 {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    private static func civilDate(daysSinceEpoch days: Int64) -> (Int64, Int64, Int64) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthPrime = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthPrime + 2) / 5 + 1
        let month = monthPrime < 10 ? monthPrime + 3 : monthPrime - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        return (year, month, day)
    }
}

/// A Swift value that can be bound to a placeholder.
public protocol MySQLBindable {
    /// The value to bind.
    var mysqlValue: MySQLValue { get }
}

extension MySQLValue: MySQLBindable {
    /// The value itself.
    public var mysqlValue: MySQLValue { self }
}

extension Int: MySQLBindable {
    /// Binds as a signed BIGINT.
    public var mysqlValue: MySQLValue { .int64(Int64(self)) }
}

extension Int32: MySQLBindable {
    /// Binds as a signed BIGINT.
    public var mysqlValue: MySQLValue { .int64(Int64(self)) }
}

extension Int64: MySQLBindable {
    /// Binds as a signed BIGINT.
    public var mysqlValue: MySQLValue { .int64(self) }
}

extension UInt: MySQLBindable {
    /// Binds as an unsigned BIGINT.
    public var mysqlValue: MySQLValue { .uint64(UInt64(self)) }
}

extension UInt32: MySQLBindable {
    /// Binds as an unsigned BIGINT.
    public var mysqlValue: MySQLValue { .uint64(UInt64(self)) }
}

extension UInt64: MySQLBindable {
    /// Binds as an unsigned BIGINT.
    public var mysqlValue: MySQLValue { .uint64(self) }
}

extension Bool: MySQLBindable {
    /// Binds as 1 or 0, which is what BOOLEAN (TINYINT(1)) stores.
    public var mysqlValue: MySQLValue { .int64(self ? 1 : 0) }
}

extension Double: MySQLBindable {
    /// Binds as a DOUBLE.
    public var mysqlValue: MySQLValue { .double(self) }
}

extension String: MySQLBindable {
    /// Binds as utf8mb4 text.
    public var mysqlValue: MySQLValue { .string(self) }
}

extension Substring: MySQLBindable {
    /// Binds as utf8mb4 text.
    public var mysqlValue: MySQLValue { .string(String(self)) }
}

extension Array: MySQLBindable where Element == UInt8 {
    /// Binds as binary data.
    public var mysqlValue: MySQLValue { .bytes(self) }
}

extension MySQLDateTime: MySQLBindable {
    /// Binds as a DATETIME.
    public var mysqlValue: MySQLValue { .dateTime(self) }
}

extension Date: MySQLBindable {
    /// Binds as a UTC DATETIME with microseconds.
    public var mysqlValue: MySQLValue { .dateTime(MySQLDateTime(self)) }
}

extension Optional: MySQLBindable where Wrapped: MySQLBindable {
    /// Binds the wrapped value, or NULL.
    public var mysqlValue: MySQLValue { self?.mysqlValue ?? .null }
}
