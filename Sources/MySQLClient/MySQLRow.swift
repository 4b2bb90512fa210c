internal import CMySQL
import struct Foundation.Date

/// The name and kind of one result column.
public struct MySQLColumn: Sendable, Hashable {
    /// The column name or alias.
    public let name: String
    /// The C API field type (`enum_field_types`) as its raw number.
    public let fieldType: UInt32
    /// True for UNSIGNED numeric columns.
    public let isUnsigned: Bool
    /// True for binary strings (character set 63, `binary`).
    public let isBinary: Bool
}

/// One result row; accessors return nil for NULL and for values that do not convert to the asked type.
public struct MySQLRow: Sendable, Hashable {
    /// The columns, shared by every row of one result.
    public let columns: [MySQLColumn]
    /// The values, one per column.
    public let values: [MySQLValue]

    /// Makes a row.
    public init(columns: [MySQLColumn], values: [MySQLValue]) {
        self.columns = columns
        self.values = values
    }

    /// The index of the first column called `name` (exact match, then case-insensitive), if any.
    public func index(of name: String) -> Int? {
        columns.firstIndex(where: { $0.name == name })
            ?? columns.firstIndex(where: { $0.name.lowercased() == name.lowercased() })
    }

    /// The value at `index`; `.null` when out of range.
    // Inlinable, as are the accessors by index: a store reading a row field by field otherwise pays a call and
    // a copy of the whole value per field.
    @inlinable
    public subscript(index: Int) -> MySQLValue {
        values.indices.contains(index) ? values[index] : .null
    }

    /// The value of column `name`; `.null` when there is no such column.
    public subscript(name: String) -> MySQLValue {
        index(of: name).map { self[$0] } ?? .null
    }

    /// True when the value at `index` is NULL (or out of range).
    @inlinable
    public func isNull(_ index: Int) -> Bool { self[index].isNull }

    /// True when the column `name` is NULL (or missing).
    public func isNull(_ name: String) -> Bool { self[name].isNull }

    /// Text, or binary data that is valid UTF-8.
    @inlinable
    public func string(_ index: Int) -> String? { Self.string(self[index]) }

    /// Text, or binary data that is valid UTF-8.
    public func string(_ name: String) -> String? { Self.string(self[name]) }

    /// A signed integer; unsigned values, BIT columns and decimal text that fit convert.
    @inlinable
    public func int64(_ index: Int) -> Int64? {
        Self.int64(self[index]) ?? bitValue(index).flatMap(Int64.init(exactly:))
    }

    /// A signed integer; unsigned values, BIT columns and decimal text that fit convert.
    public func int64(_ name: String) -> Int64? { index(of: name).flatMap { int64($0) } }

    /// An unsigned integer; non-negative signed values, BIT columns and decimal text convert.
    @inlinable
    public func uint64(_ index: Int) -> UInt64? { Self.uint64(self[index]) ?? bitValue(index) }

    /// An unsigned integer; non-negative signed values, BIT columns and decimal text convert.
    public func uint64(_ name: String) -> UInt64? { index(of: name).flatMap { uint64($0) } }

    /// A floating-point number; integers and decimal text convert.
    @inlinable
    public func double(_ index: Int) -> Double? { Self.double(self[index]) }

    /// A floating-point number; integers and decimal text convert.
    public func double(_ name: String) -> Double? { Self.double(self[name]) }

    /// A boolean from an integer or a BIT column such as BIT(1): 0 is false, anything else true.
    @inlinable
    public func bool(_ index: Int) -> Bool? {
        Self.int64(self[index]).map { $0 != 0 } ?? bitValue(index).map { $0 != 0 }
    }

    /// A boolean from an integer or a BIT column such as BIT(1): 0 is false, anything else true.
    public func bool(_ name: String) -> Bool? { index(of: name).flatMap { bool($0) } }

    /// Binary data, or the UTF-8 bytes of text.
    @inlinable
    public func bytes(_ index: Int) -> [UInt8]? { Self.bytes(self[index]) }

    /// Binary data, or the UTF-8 bytes of text.
    public func bytes(_ name: String) -> [UInt8]? { Self.bytes(self[name]) }

    /// A DATE, DATETIME or TIMESTAMP.
    @inlinable
    public func dateTime(_ index: Int) -> MySQLDateTime? { Self.dateTime(self[index]) }

    /// A DATE, DATETIME or TIMESTAMP.
    public func dateTime(_ name: String) -> MySQLDateTime? { Self.dateTime(self[name]) }

    /// A DATE, DATETIME or TIMESTAMP read as UTC.
    @inlinable
    public func date(_ index: Int) -> Date? { Self.dateTime(self[index])?.date }

    /// A DATE, DATETIME or TIMESTAMP read as UTC.
    public func date(_ name: String) -> Date? { Self.dateTime(self[name])?.date }

    /// The value of a BIT column at `index` as an integer; nil for NULL and for other columns.
    // Not inlinable: only reached once the value is not a number, so the hot path stays one switch.
    @usableFromInline
    func bitValue(_ index: Int) -> UInt64? {
        // BIT(1...64) arrives as a binary string of ceil(n / 8) bytes, most significant first (the binary
        // protocol sends MYSQL_TYPE_BIT as a length-encoded string; MariaDB docs, BIT).
        guard columns.indices.contains(index), columns[index].fieldType == MYSQL_TYPE_BIT.rawValue,
            case .bytes(let bytes) = self[index], bytes.count <= 8
        else { return nil }
        return bytes.reduce(0) { $0 << 8 | UInt64($1) }
    }

    @inlinable
    static func string(_ value: MySQLValue) -> String? {
        switch value {
        case .string(let text): text
        case .bytes(let bytes): String(validating: bytes, as: UTF8.self)
        default: nil
        }
    }

    @inlinable
    static func int64(_ value: MySQLValue) -> Int64? {
        switch value {
        case .int64(let number): number
        case .uint64(let number): Int64(exactly: number)
        case .double(let number): Int64(exactly: number)
        case .string(let text): Int64(text)
        default: nil
        }
    }

    @inlinable
    static func uint64(_ value: MySQLValue) -> UInt64? {
        switch value {
        case .int64(let number): UInt64(exactly: number)
        case .uint64(let number): number
        case .double(let number): UInt64(exactly: number)
        case .string(let text): UInt64(text)
        default: nil
        }
    }

    @inlinable
    static func double(_ value: MySQLValue) -> Double? {
        switch value {
        case .int64(let number): Double(number)
        case .uint64(let number): Double(number)
        case .double(let number): number
        case .string(let text): Double(text)
        default: nil
        }
    }

    @inlinable
    static func bytes(_ value: MySQLValue) -> [UInt8]? {
        switch value {
        case .bytes(let bytes): bytes
        case .string(let text): Array(text.utf8)
        default: nil
        }
    }

    @inlinable
    static func dateTime(_ value: MySQLValue) -> MySQLDateTime? {
        if case .dateTime(let dateTime) = value { return dateTime }
        return nil
    }
}
