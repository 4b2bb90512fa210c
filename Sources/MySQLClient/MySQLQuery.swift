/// SQL text with `?` placeholders and the values bound to them.
///
/// Write queries as string literals with interpolations, after postgres-nio's `PostgresQuery`: every
/// interpolated value becomes a `?` and a bind, never SQL text.
/// ```swift
/// let query: MySQLQuery = "SELECT state FROM requests WHERE id = \(id) AND version = \(version)"
/// ```
/// Raw SQL needs `init(unsafeSQL:)`. A literal `?` in the SQL text counts as a placeholder.
public struct MySQLQuery: Sendable, Hashable, ExpressibleByStringInterpolation, CustomStringConvertible {
    /// The SQL text with one `?` per bind.
    public var sql: String
    /// The values, in placeholder order.
    public var binds: [MySQLValue]

    /// A query from raw SQL text; the caller vouches that nothing user-supplied was spliced into `unsafeSQL`.
    public init(unsafeSQL: String, binds: [MySQLValue] = []) {
        self.sql = unsafeSQL
        self.binds = binds
    }

    /// A query from a string literal, which cannot contain runtime values.
    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    /// A query from an interpolated literal: values become binds.
    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, binds: stringInterpolation.binds)
    }

    /// The SQL text only; bound values are never printed.
    public var description: String { sql }

    /// Collects literal SQL and bound values.
    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        var sql: String
        var binds: [MySQLValue]

        /// Reserves room for the literal text.
        public init(literalCapacity: Int, interpolationCount: Int) {
            sql = ""
            sql.reserveCapacity(literalCapacity + interpolationCount)
            binds = []
            binds.reserveCapacity(interpolationCount)
        }

        /// Appends SQL text from the literal.
        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Appends a `?` and binds `value` to it.
        public mutating func appendInterpolation(_ value: some MySQLBindable) {
            sql += "?"
            binds.append(value.mysqlValue)
        }

        /// Appends a `?` and binds `value` to it, or NULL when it is nil.
        public mutating func appendInterpolation(_ value: (some MySQLBindable)?) {
            sql += "?"
            binds.append(value?.mysqlValue ?? .null)
        }

        /// Appends an identifier (table, column, database) quoted with backticks; embedded backticks are
        /// doubled, which is MySQL's escape for quoted identifiers, so any text stays one identifier.
        public mutating func appendInterpolation(identifier: String) {
            sql += "`" + identifier.replacingBackticks() + "`"
        }
    }
}

extension String {
    fileprivate func replacingBackticks() -> String {
        var result = ""
        result.reserveCapacity(utf8.count + 2)
        for character in self {
            if character == "`" { result += "``" } else { result.append(character) }
        }
        return result
    }
}
