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
    public var sql: String { text.sql }
    /// The values, in placeholder order.
    public var binds: [MySQLValue]
    /// The text as written: a literal's static segments, or a string.
    let text: Text

    /// A query from raw SQL text; the caller vouches that nothing user-supplied was spliced into `unsafeSQL`.
    public init(unsafeSQL: String, binds: [MySQLValue] = []) {
        self.text = .string(unsafeSQL)
        self.binds = binds
    }

    /// A query from a string literal, which cannot contain runtime values.
    public init(stringLiteral value: StaticString) {
        self.text = value.hasPointerRepresentation ? .pieces([.segment(value)]) : .string(value.description)
        self.binds = []
    }

    /// A query from an interpolated literal: values become binds.
    public init(stringInterpolation: StringInterpolation) {
        self.text = stringInterpolation.dynamicSQL.map(Text.string) ?? .pieces(stringInterpolation.pieces)
        self.binds = stringInterpolation.binds
    }

    /// The SQL text only; bound values are never printed.
    public var description: String { sql }

    /// Queries are equal when their SQL text and binds are, however the text was written.
    public static func == (lhs: MySQLQuery, rhs: MySQLQuery) -> Bool {
        lhs.sql == rhs.sql && lhs.binds == rhs.binds
    }

    /// Hashes the SQL text and binds, as `==` compares them.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(sql)
        hasher.combine(binds)
    }

    /// Collects literal SQL and bound values.
    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        /// The literal's pieces while every one of them is static.
        var pieces: [Text.Piece]
        /// The SQL so far once a piece was not static (an identifier, a literal without a pointer); from
        /// then on pieces are appended here as text.
        var dynamicSQL: String?
        var binds: [MySQLValue]

        /// Reserves room for the literal's segments and placeholders.
        public init(literalCapacity: Int, interpolationCount: Int) {
            pieces = []
            pieces.reserveCapacity(2 * interpolationCount + 1)
            binds = []
            binds.reserveCapacity(interpolationCount)
        }

        /// Appends SQL text from the literal.
        public mutating func appendLiteral(_ literal: StaticString) {
            if literal.hasPointerRepresentation {
                append(.segment(literal))
            } else {
                append(dynamic: literal.description)
            }
        }

        /// Appends a `?` and binds `value` to it.
        public mutating func appendInterpolation(_ value: some MySQLBindable) {
            append(.placeholder)
            binds.append(value.mysqlValue)
        }

        /// Appends a `?` and binds `value` to it, or NULL when it is nil.
        public mutating func appendInterpolation(_ value: (some MySQLBindable)?) {
            append(.placeholder)
            binds.append(value?.mysqlValue ?? .null)
        }

        /// Appends an identifier (table, column, database) quoted with backticks; embedded backticks are
        /// doubled, which is MySQL's escape for quoted identifiers, so any text stays one identifier.
        public mutating func appendInterpolation(identifier: String) {
            append(dynamic: "`" + identifier.replacingBackticks() + "`")
        }

        /// Appends a static piece, as a piece while all are static, else as text.
        private mutating func append(_ piece: Text.Piece) {
            if dynamicSQL != nil {
                dynamicSQL? += piece.sql
            } else {
                pieces.append(piece)
            }
        }

        /// Appends text with no static address: the query's text becomes a string from here on.
        private mutating func append(dynamic text: String) {
            dynamicSQL = (dynamicSQL ?? Text.pieces(pieces).sql) + text
        }
    }

    /// SQL text as a literal's pieces (for literals whose interpolations are all values), or as a string.
    ///
    /// Pieces compare and hash by address and length, so a connection finds a literal's prepared statement
    /// without building or hashing its text: equal pieces are the same bytes, hence the same SQL.
    enum Text: Sendable, Hashable {
        case pieces([Piece])
        case string(String)

        /// Hashes a literal's pieces folded into one word: the statement cache hashes a query's text on every
        /// run, and a `Hasher` combine per piece cost more than the rest of the lookup. Equal texts fold equally.
        func hash(into hasher: inout Hasher) {
            switch self {
            case .string(let sql):
                hasher.combine(sql)
            case .pieces(let pieces):
                // FNV-1a's multiplier over each piece's address and length; Hasher still mixes the result.
                var fold: UInt = 0xcbf2_9ce4_8422_2325
                for piece in pieces {
                    switch piece {
                    case .placeholder:
                        fold = (fold ^ UInt.max) &* 0x100_0000_01b3
                    case .segment(let segment):
                        fold = (fold ^ UInt(bitPattern: segment.utf8Start)) &* 0x100_0000_01b3
                        fold = (fold ^ UInt(bitPattern: segment.utf8CodeUnitCount)) &* 0x100_0000_01b3
                    }
                }
                hasher.combine(fold)
            }
        }

        /// A static segment of a literal, or the `?` of a bound value.
        enum Piece: Sendable, Hashable {
            /// Only segments with a pointer representation (`StaticString.hasPointerRepresentation`).
            case segment(StaticString)
            case placeholder

            static func == (lhs: Piece, rhs: Piece) -> Bool {
                switch (lhs, rhs) {
                case (.placeholder, .placeholder):
                    return true
                case (.segment(let left), .segment(let right)):
                    return left.utf8Start == right.utf8Start && left.utf8CodeUnitCount == right.utf8CodeUnitCount
                default:
                    return false
                }
            }

            func hash(into hasher: inout Hasher) {
                switch self {
                case .placeholder:
                    hasher.combine(UInt.max)
                case .segment(let segment):
                    hasher.combine(UInt(bitPattern: segment.utf8Start))
                    hasher.combine(segment.utf8CodeUnitCount)
                }
            }

            var sql: String {
                switch self {
                case .placeholder: "?"
                case .segment(let segment): segment.description
                }
            }
        }

        /// The SQL text.
        var sql: String {
            switch self {
            case .string(let sql):
                return sql
            case .pieces(let pieces):
                return pieces.reduce(into: "") { $0 += $1.sql }
            }
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
