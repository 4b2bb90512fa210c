/// Where and how to connect: server, credentials, database, TLS and timeouts.
///
/// `description` and `debugDescription` never show the password.
public struct MySQLConfiguration: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The TLS requirement, named after the `ssl-mode` values of the MySQL clients.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable {
        /// TLS is not requested.
        case disabled = "DISABLED"
        /// TLS is required; the server certificate's chain is verified against `ssl-ca` when one is given (Connector/C
        /// then sets SSL_VERIFY_PEER), its host name never.
        case required = "REQUIRED"
        /// TLS is required and the server certificate must chain to the CA and name the host.
        case verifyIdentity = "VERIFY_IDENTITY"
    }

    /// The TCP host (name, IPv4 or IPv6 literal); nil to connect over `socketPath`.
    public var host: String?
    /// The TCP port.
    public var port: UInt16
    /// The Unix socket path; used only when `host` is nil.
    public var socketPath: String?
    /// The user name.
    public var user: String
    /// The password; nil for none.
    public var password: String?
    /// The default database; nil for none.
    public var database: String?
    /// Whether and how TLS is used.
    public var tlsMode: TLSMode
    /// A PEM file of CA certificates to verify the server with; nil for the library's default.
    public var tlsCAPath: String?
    /// MYSQL_OPT_CONNECT_TIMEOUT in seconds.
    public var connectTimeoutSeconds: UInt32
    /// MYSQL_OPT_READ_TIMEOUT in seconds: the longest wait for one read from the server.
    public var readTimeoutSeconds: UInt32
    /// MYSQL_OPT_WRITE_TIMEOUT in seconds: the longest wait for one write to the server.
    public var writeTimeoutSeconds: UInt32
    /// The session's `innodb_lock_wait_timeout` (row locks) and `lock_wait_timeout` (metadata and table locks) in
    /// seconds, set right after connecting; nil keeps the server's values. Keep it below `readTimeoutSeconds`, so
    /// that the server ends a lock wait with 1205 before the client gives the connection up as lost.
    public var lockWaitTimeoutSeconds: UInt32?
    /// CLIENT_FOUND_ROWS: an UPDATE reports the rows it matched instead of the rows it changed.
    public var reportsMatchedRows: Bool

    /// The default MySQL port.
    public static let defaultPort: UInt16 = 3306
    /// The session lock wait when the URL gives none and the read timeout allows it.
    public static let defaultLockWaitTimeoutSeconds: UInt32 = 5

    /// A TCP configuration.
    public init(
        host: String, port: UInt16 = Self.defaultPort, user: String, password: String? = nil, database: String? = nil
    ) {
        self.host = host
        self.port = port
        self.socketPath = nil
        self.user = user
        self.password = password
        self.database = database
        self.tlsMode = .disabled
        self.tlsCAPath = nil
        self.connectTimeoutSeconds = 5
        self.readTimeoutSeconds = 30
        self.writeTimeoutSeconds = 30
        self.lockWaitTimeoutSeconds = Self.defaultLockWaitTimeoutSeconds
        self.reportsMatchedRows = false
    }

    /// A Unix socket configuration.
    public init(socketPath: String, user: String, password: String? = nil, database: String? = nil) {
        self.init(host: "", user: user, password: password, database: database)
        self.host = nil
        self.socketPath = socketPath
    }

    /// Parses `mysql://USER[:PASSWORD]@HOST[:PORT]/[DATABASE][?PARAMETERS]`.
    ///
    /// User, password and database are percent-decoded; a `@`, `:`, `/`, `?` or `%` in them must be
    /// percent-encoded (RFC 3986 §3.2.1). The host may be empty when `socket` is given, and an IPv6 literal
    /// goes in brackets. Parameters: `ssl-mode` (DISABLED, REQUIRED, VERIFY_IDENTITY), `ssl-ca` (a path),
    /// `socket` (a Unix socket path), `connect-timeout`, `read-timeout`, `write-timeout`, `lock-wait-timeout`
    /// (whole seconds, 1 to 86400; `lock-wait-timeout` below `read-timeout`, and unless given 5 or
    /// `read-timeout` - 1 if less, none with a `read-timeout` of 1).
    /// - Throws: `MySQLConfigurationError`, whose text never repeats the password.
    public init(url: String) throws(MySQLConfigurationError) {
        let scheme = "mysql://"
        guard url.utf8.count > scheme.utf8.count, url.lowercased().hasPrefix(scheme) else {
            throw .notAMySQLURL
        }
        let rest = url.dropFirst(scheme.count)
        // RFC 3986 §3.2: the authority ends at the first "/", "?" or "#".
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == "#" }) ?? rest.endIndex
        let authority = rest[rest.startIndex..<authorityEnd]
        var afterAuthority = rest[authorityEnd...]
        if let fragment = afterAuthority.firstIndex(of: "#") {
            afterAuthority = afterAuthority[afterAuthority.startIndex..<fragment]
        }

        guard let at = authority.lastIndex(of: "@") else { throw .missingUser }
        let userInfo = authority[authority.startIndex..<at]
        let hostPort = authority[authority.index(after: at)...]

        let rawUser: Substring
        var rawPassword: Substring?
        if let colon = userInfo.firstIndex(of: ":") {
            rawUser = userInfo[userInfo.startIndex..<colon]
            rawPassword = userInfo[userInfo.index(after: colon)...]
        } else {
            rawUser = userInfo
        }
        guard let user = Self.percentDecoded(rawUser) else { throw .invalidPercentEncoding(field: "user") }
        guard !user.isEmpty else { throw .missingUser }
        var password: String?
        if let rawPassword {
            guard let decoded = Self.percentDecoded(rawPassword) else {
                throw .invalidPercentEncoding(field: "password")
            }
            password = decoded
        }

        let (host, port) = try Self.parseHostPort(hostPort)

        var path = afterAuthority
        var query: Substring = ""
        if let question = afterAuthority.firstIndex(of: "?") {
            path = afterAuthority[afterAuthority.startIndex..<question]
            query = afterAuthority[afterAuthority.index(after: question)...]
        }
        var database: String?
        if path.hasPrefix("/") {
            let rawDatabase = path.dropFirst()
            guard let decoded = Self.percentDecoded(rawDatabase) else {
                throw .invalidPercentEncoding(field: "database")
            }
            guard !decoded.contains("/"), !decoded.contains("\0") else { throw .invalidDatabaseName }
            database = decoded.isEmpty ? nil : decoded
        }

        self.init(host: host ?? "", port: port ?? Self.defaultPort, user: user, password: password, database: database)
        self.host = host
        // Nil until the URL gives one, so that an absent value can follow the URL's read timeout below.
        lockWaitTimeoutSeconds = nil
        try applyParameters(query)
        if self.host == nil && socketPath == nil { throw .missingHost }
        if self.host != nil && socketPath != nil { throw .conflictingParameters("socket given together with a host") }
        if self.host == nil && port != nil { throw .conflictingParameters("port given together with socket") }
        if tlsCAPath != nil && tlsMode == .disabled {
            throw .conflictingParameters("ssl-ca needs ssl-mode=REQUIRED or VERIFY_IDENTITY")
        }
        guard let lockWaitTimeoutSeconds else {
            // Not given: 5 s, or 1 s under the read timeout when that is shorter; a read timeout of 1 s leaves the
            // server's waits, which that read timeout then ends first, as it did before this setting existed.
            lockWaitTimeoutSeconds =
                readTimeoutSeconds > 1 ? min(Self.defaultLockWaitTimeoutSeconds, readTimeoutSeconds - 1) : nil
            return
        }
        if lockWaitTimeoutSeconds >= readTimeoutSeconds {
            throw .conflictingParameters(
                "lock-wait-timeout (\(lockWaitTimeoutSeconds) s) must be below read-timeout (\(readTimeoutSeconds) s): "
                    + "a lock wait that long would end as a lost connection; give a shorter lock-wait-timeout"
                    // A longer read-timeout helps only when one above the lock wait is allowed.
                    + (lockWaitTimeoutSeconds < Self.maximumTimeoutSeconds ? " or a longer read-timeout" : ""))
        }
    }

    private mutating func applyParameters(_ query: Substring) throws(MySQLConfigurationError) {
        var seen: Set<String> = []
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = Self.percentDecoded(parts[0]) else { throw .invalidPercentEncoding(field: "parameter name") }
            // An unknown name is named as unknown, even without a value (`?idle-timeout`).
            guard Self.parameters.contains(name) else { throw .unknownParameter(name) }
            guard parts.count == 2, let value = Self.percentDecoded(parts[1]), !value.isEmpty else {
                throw .invalidParameterValue(name: name)
            }
            guard seen.insert(name).inserted else { throw .conflictingParameters("\(name) given twice") }
            switch name {
            case "ssl-mode":
                guard let mode = TLSMode(rawValue: value.uppercased()) else { throw .invalidParameterValue(name: name) }
                tlsMode = mode
            case "ssl-ca":
                guard !value.contains("\0") else { throw .invalidParameterValue(name: name) }
                tlsCAPath = value
            case "socket":
                guard !value.contains("\0") else { throw .invalidParameterValue(name: name) }
                socketPath = value
            case "connect-timeout":
                connectTimeoutSeconds = try Self.seconds(value, name: name)
            case "read-timeout":
                readTimeoutSeconds = try Self.seconds(value, name: name)
            case "write-timeout":
                writeTimeoutSeconds = try Self.seconds(value, name: name)
            case "lock-wait-timeout":
                lockWaitTimeoutSeconds = try Self.seconds(value, name: name)
            default:
                throw .unknownParameter(name)
            }
        }
    }

    /// The URL parameters that take a timeout in seconds.
    static let timeoutParameters: Set<String> = ["connect-timeout", "read-timeout", "write-timeout", "lock-wait-timeout"]

    /// Every URL parameter `applyParameters` knows.
    static let parameters = timeoutParameters.union(["ssl-mode", "ssl-ca", "socket"])

    /// The longest timeout a URL may give: a day.
    static let maximumTimeoutSeconds: UInt32 = 86_400

    private static func seconds(_ text: String, name: String) throws(MySQLConfigurationError) -> UInt32 {
        // Digits only: UInt32(_:) alone would also take a sign ("+5"). The cap keeps every value far below what
        // Connector/C's pvio layer can hold once it turns seconds into an int of milliseconds (about 2,147,483 s).
        guard text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let value = UInt32(text), value > 0, value <= maximumTimeoutSeconds
        else { throw .invalidParameterValue(name: name) }
        return value
    }

    private static func parseHostPort(_ text: Substring) throws(MySQLConfigurationError) -> (String?, UInt16?) {
        var hostPart = text
        var portPart: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw .invalidHost }
            hostPart = text[text.index(after: text.startIndex)..<close]
            let after = text[text.index(after: close)...]
            if after.hasPrefix(":") {
                portPart = after.dropFirst()
            } else if !after.isEmpty {
                throw .invalidHost
            }
            guard !hostPart.isEmpty else { throw .invalidHost }
        } else if let colon = text.lastIndex(of: ":") {
            hostPart = text[text.startIndex..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard let host = percentDecoded(hostPart), !host.contains("\0"), !host.contains(":") || text.hasPrefix("[")
        else { throw .invalidHost }
        var port: UInt16?
        if let portPart {
            // RFC 3986 §3.2.3: port = *DIGIT; UInt16(_:) alone would also take a sign ("+80").
            guard portPart.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
                let value = UInt16(portPart), value > 0
            else { throw .invalidPort }
            port = value
        }
        return (host.isEmpty ? nil : host, port)
    }

    /// Decodes `%XX` escapes (RFC 3986 §2.1); nil for a malformed escape or bytes that are not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.utf8.count)
        var iterator = text.utf8.makeIterator()
        while let byte = iterator.next() {
            guard byte == UInt8(ascii: "%") else {
                bytes.append(byte)
                continue
            }
            guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                return nil
            }
            bytes.append(high << 4 | low)
        }
        return String(validating: bytes, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }

    /// The configuration as a URL with the password replaced by `***`, for logs.
    public var redactedURL: String {
        var text = "mysql://\(user)\(password == nil ? "" : ":***")@"
        if let host {
            text += host.contains(":") ? "[\(host)]" : host
            text += ":\(port)"
        }
        text += "/\(database ?? "")"
        var parameters: [String] = []
        if let socketPath { parameters.append("socket=\(socketPath)") }
        if tlsMode != .disabled { parameters.append("ssl-mode=\(tlsMode.rawValue)") }
        if let tlsCAPath { parameters.append("ssl-ca=\(tlsCAPath)") }
        return parameters.isEmpty ? text : text + "?" + parameters.joined(separator: "&")
    }

    /// The redacted URL.
    public var description: String { redactedURL }

    /// The redacted URL, labelled.
    public var debugDescription: String { "MySQLConfiguration(\(redactedURL))" }
}

/// Why a MySQL URL was rejected; the text never repeats the password.
public enum MySQLConfigurationError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The text does not start with `mysql://`.
    case notAMySQLURL
    /// There is no user before the `@`.
    case missingUser
    /// There is neither a host nor a `socket` parameter.
    case missingHost
    /// The host is malformed (for example an unclosed IPv6 bracket).
    case invalidHost
    /// The port is not a number from 1 to 65535.
    case invalidPort
    /// A `%` escape in the named field is malformed or decodes to invalid UTF-8.
    case invalidPercentEncoding(field: String)
    /// The database name contains `/` or a NUL byte.
    case invalidDatabaseName
    /// A query parameter this client does not know.
    case unknownParameter(String)
    /// A parameter value that is missing or not allowed.
    case invalidParameterValue(name: String)
    /// Parameters that contradict each other or the rest of the URL.
    case conflictingParameters(String)

    /// What is wrong, without the password.
    public var description: String {
        switch self {
        case .notAMySQLURL: "invalid MySQL URL: expected mysql://USER[:PASSWORD]@HOST[:PORT]/[DATABASE]"
        case .missingUser: "invalid MySQL URL: no user (expected USER@ before the host)"
        case .missingHost: "invalid MySQL URL: no host and no socket parameter"
        case .invalidHost: "invalid MySQL URL: malformed host"
        case .invalidPort: "invalid MySQL URL: the port must be a number from 1 to 65535"
        case .invalidPercentEncoding(let field): "invalid MySQL URL: malformed percent-encoding in the \(field)"
        case .invalidDatabaseName: "invalid MySQL URL: the database name must not contain '/'"
        case .unknownParameter(let name): "invalid MySQL URL: unknown parameter '\(name)'"
        case .invalidParameterValue(let name) where MySQLConfiguration.timeoutParameters.contains(name):
            "invalid MySQL URL: bad value for parameter '\(name)' (whole seconds, 1 to \(MySQLConfiguration.maximumTimeoutSeconds))"
        case .invalidParameterValue(let name): "invalid MySQL URL: bad value for parameter '\(name)'"
        case .conflictingParameters(let reason): "invalid MySQL URL: \(reason)"
        }
    }
}
