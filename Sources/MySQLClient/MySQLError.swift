/// A MySQL server, client-library or pool error number; open-ended, so new codes never break a `switch`.
public struct MySQLErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The error number: server codes below 2000 and from 3000, client-library codes 2000-2999 and 5000-5999,
    /// and this package's own codes from 90000.
    public let rawValue: UInt32

    /// Wraps an error number.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// ER_DUP_ENTRY: an insert or update collided with a unique key.
    public static let duplicateEntry = Self(rawValue: 1062)
    /// ER_LOCK_DEADLOCK: InnoDB chose this transaction as a deadlock victim and rolled it back.
    public static let deadlock = Self(rawValue: 1213)
    /// ER_LOCK_WAIT_TIMEOUT: a row lock was not granted within innodb_lock_wait_timeout, or a metadata or table
    /// lock within lock_wait_timeout; the connection stays usable.
    public static let lockWaitTimeout = Self(rawValue: 1205)
    /// ER_NO_REFERENCED_ROW_2: a foreign key points at a missing row.
    public static let noReferencedRow = Self(rawValue: 1452)
    /// ER_PARSE_ERROR: the SQL text does not parse.
    public static let syntaxError = Self(rawValue: 1064)
    /// ER_NO_SUCH_TABLE: the table does not exist.
    public static let noSuchTable = Self(rawValue: 1146)
    /// ER_TABLEACCESS_DENIED_ERROR: the user lacks the privilege the statement needs on a table (also answered for a
    /// table that does not exist when the user holds no privilege on the database, so as not to reveal it).
    public static let tableAccessDenied = Self(rawValue: 1142)
    /// ER_QUERY_INTERRUPTED: the statement was killed; the connection itself survives.
    public static let queryInterrupted = Self(rawValue: 1317)
    /// ER_SERVER_SHUTDOWN: the server is shutting down.
    public static let serverShutdown = Self(rawValue: 1053)
    /// ER_CONNECTION_KILLED (MariaDB): the connection was killed.
    public static let connectionKilled = Self(rawValue: 1927)
    /// ER_NET_PACKET_TOO_LARGE: a packet exceeded max_allowed_packet; the server then closes the connection.
    public static let packetTooLarge = Self(rawValue: 1153)
    /// ER_OPTION_PREVENTS_STATEMENT: for a write, the server runs read-only (`read_only`), as a former primary does
    /// after a managed database's failover while its host name already points at the new primary.
    public static let readOnly = Self(rawValue: 1290)
    /// ER_NET_READ_ERROR: the server could not read from the connection and closes it.
    public static let serverReadError = Self(rawValue: 1158)
    /// ER_NET_READ_INTERRUPTED: the server timed out reading from the connection (net_read_timeout) and closes it.
    public static let serverReadTimeout = Self(rawValue: 1159)
    /// ER_NET_ERROR_ON_WRITE: the server could not write to the connection.
    public static let serverWriteError = Self(rawValue: 1160)
    /// ER_NET_WRITE_INTERRUPTED: the server timed out writing to the connection (net_write_timeout).
    public static let serverWriteTimeout = Self(rawValue: 1161)
    /// ER_MAX_PREPARED_STMT_COUNT_REACHED: the server holds max_prepared_stmt_count statements across all sessions.
    public static let preparedStatementLimit = Self(rawValue: 1461)
    /// ER_NEED_REPREPARE: a table changed under a prepared statement more often than the server re-prepares it itself.
    public static let needReprepare = Self(rawValue: 1615)
    /// ER_STATEMENT_TIMEOUT (MariaDB): the statement ran longer than max_statement_time and was stopped.
    public static let statementTimeout = Self(rawValue: 1969)
    /// ER_QUERY_TIMEOUT (MySQL): a SELECT ran longer than max_execution_time and was stopped.
    public static let queryExecutionTimeout = Self(rawValue: 3024)
    /// ER_UNKNOWN_COM_ERROR: on Galera, "WSREP has not yet prepared node for application use": the node is not in
    /// the cluster's primary component (it is joining, or was cut off) and refuses statements until it is.
    public static let nodeNotReady = Self(rawValue: 1047)
    /// ER_CON_COUNT_ERROR: the server refused the connection because it has too many.
    public static let tooManyConnections = Self(rawValue: 1040)
    /// ER_TOO_MANY_USER_CONNECTIONS: the user has max_user_connections (the server-wide limit) connections open.
    public static let tooManyUserConnections = Self(rawValue: 1203)
    /// ER_USER_LIMIT_REACHED: the account exceeded a resource limit of its own, such as MAX_USER_CONNECTIONS.
    public static let userLimitReached = Self(rawValue: 1226)
    /// ER_ACCESS_DENIED_ERROR: wrong user or password.
    public static let accessDenied = Self(rawValue: 1045)
    /// ER_DBACCESS_DENIED_ERROR: the user connected but holds no privilege on the database it names.
    public static let databaseAccessDenied = Self(rawValue: 1044)
    /// ER_BAD_DB_ERROR: the database named in the URL does not exist.
    public static let unknownDatabase = Self(rawValue: 1049)
    /// CR_SOCKET_CREATE_ERROR: the client could not create a socket.
    public static let socketCreateError = Self(rawValue: 2001)
    /// CR_CONNECTION_ERROR: the Unix socket (or TCP port) refused or timed out.
    public static let connectionError = Self(rawValue: 2002)
    /// CR_CONN_HOST_ERROR: the TCP connection to the host failed.
    public static let hostConnectionError = Self(rawValue: 2003)
    /// CR_UNKNOWN_HOST: the host name does not resolve.
    public static let unknownHost = Self(rawValue: 2005)
    /// CR_SERVER_GONE_ERROR: the server went away between statements.
    public static let serverGone = Self(rawValue: 2006)
    /// CR_OUT_OF_MEMORY: the client library could not allocate.
    public static let outOfMemory = Self(rawValue: 2008)
    /// CR_SERVER_HANDSHAKE_ERR: the connection handshake failed.
    public static let handshakeError = Self(rawValue: 2012)
    /// CR_SERVER_LOST: the server went away during a statement.
    public static let serverLost = Self(rawValue: 2013)
    /// CR_COMMANDS_OUT_OF_SYNC: the protocol state of the connection is unusable.
    public static let commandsOutOfSync = Self(rawValue: 2014)
    /// CR_SSL_CONNECTION_ERROR: TLS could not be established or verified.
    public static let sslConnectionError = Self(rawValue: 2026)
    /// CR_MALFORMED_PACKET: the server sent something the client cannot read.
    public static let malformedPacket = Self(rawValue: 2027)
    /// CR_NEW_STMT_METADATA: a prepared statement's result columns changed (ALTER TABLE) since it was prepared.
    public static let newStatementMetadata = Self(rawValue: 2057)
    /// CR_SERVER_LOST_EXTENDED: the server went away during a statement (with system error detail).
    public static let serverLostExtended = Self(rawValue: 2055)
    /// ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8): the server closed an idle connection.
    public static let clientInteractionTimeout = Self(rawValue: 4031)
    /// CR_ERR_NET_READ (MariaDB Connector/C): reading from the network failed.
    public static let networkReadError = Self(rawValue: 5013)
    /// CR_ERR_NET_WRITE (MariaDB Connector/C): writing to the network failed.
    public static let networkWriteError = Self(rawValue: 5014)

    /// The pool had no free connection within its acquire timeout.
    public static let poolTimeout = Self(rawValue: 90001)
    /// The pool was closed.
    public static let poolClosed = Self(rawValue: 90002)
    /// The connection was closed, or a failed rollback made it unusable.
    public static let connectionClosed = Self(rawValue: 90003)
    /// The number of bound values differs from the number of `?` placeholders.
    public static let bindCountMismatch = Self(rawValue: 90004)
    /// mysql_library_init failed.
    public static let libraryInitFailed = Self(rawValue: 90005)
    /// A text argument (host, user, SQL) contained a NUL byte, which the C API cannot carry.
    public static let invalidArgument = Self(rawValue: 90006)

    /// The codes after which the connection cannot be used again. `readOnly` is among them because only a new
    /// connection resolves the host name again and so reaches a promoted primary; reads on the old one still work.
    public static let connectionBrokenCodes: Set<Self> = [
        .readOnly, .nodeNotReady, .serverShutdown, .connectionKilled, .packetTooLarge, .serverReadError, .serverReadTimeout, .serverWriteError,
        .serverWriteTimeout, .socketCreateError, .connectionError, .hostConnectionError,
        .unknownHost, .serverGone, .handshakeError, .serverLost, .commandsOutOfSync, .sslConnectionError,
        .malformedPacket, .serverLostExtended, .clientInteractionTimeout, .networkReadError,
        .networkWriteError, .connectionClosed,
    ]

    /// A few words naming the codes an operator meets when connecting or under load, for messages; nil for the
    /// rest. Fixed texts, unlike a server's message, which may quote user data.
    public var summary: String? {
        switch self {
        case .tooManyConnections: "the server has too many connections"
        case .tooManyUserConnections, .userLimitReached: "the user has too many connections or reached a resource limit"
        case .accessDenied: "access denied (user or password)"
        case .databaseAccessDenied: "access denied to the database (the user holds no privilege on it)"
        case .unknownDatabase: "unknown database"
        case .serverShutdown: "the server is shutting down"
        case .readOnly: "the server is read-only (a replica, or a former primary after a failover)"
        case .tableAccessDenied: "the user lacks a privilege on a table"
        case .lockWaitTimeout: "lock wait timeout"
        case .deadlock: "deadlock"
        case .connectionKilled: "connection killed"
        case .connectionError, .hostConnectionError: "cannot connect to the server"
        case .unknownHost: "unknown host"
        case .serverGone, .serverLost, .serverLostExtended: "lost the connection to the server"
        case .sslConnectionError: "TLS could not be set up or the server's certificate was refused"
        case .clientInteractionTimeout: "the server closed an idle connection"
        case .statementTimeout, .queryExecutionTimeout: "the statement ran past the server's statement time limit"
        case .nodeNotReady: "the cluster node is not ready (Galera: not in the primary component)"
        default: nil
        }
    }

    /// True when a connection that reported this code must be discarded rather than reused.
    public var isConnectionBroken: Bool { Self.connectionBrokenCodes.contains(self) }

    /// True for deadlock and lock wait timeout: the transaction may succeed if run again.
    public var isTransient: Bool { self == .deadlock || self == .lockWaitTimeout }

    /// The number.
    public var description: String { String(rawValue) }

    /// Lets callers write `catch MySQLErrorCode.duplicateEntry { ... }`.
    public static func ~= (code: Self, error: any Error) -> Bool {
        (error as? MySQLError)?.code == code
    }

    /// Lets callers of typed-throwing (`throws(MySQLError)`) functions match a code in `catch`.
    public static func ~= (code: Self, error: MySQLError) -> Bool {
        error.code == code
    }
}

/// An error of the MySQL server, the client library or the pool.
///
/// `message` never carries bound values: server messages of executed statements (which can quote the values,
/// as ER_DUP_ENTRY does) are replaced by a fixed text per code. `description` is generic on purpose (after
/// postgres-nio's PSQLError); use `String(reflecting:)` or `message` for details.
public struct MySQLError: Error, Hashable, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The error number.
    public let code: MySQLErrorCode
    /// The five-character SQLSTATE, `HY000` when the client library gave none.
    public let sqlState: String
    /// A human-readable explanation without bound values or secrets.
    public let message: String
    /// For ER_DUP_ENTRY, the unique key the server's message names (the message itself is withheld: it quotes the
    /// value); nil for other codes, or when the message names none (see `duplicateKeyName(inServerMessage:)`).
    public let duplicateKey: String?

    /// Makes an error; `message` must not contain bound values or secrets.
    public init(code: MySQLErrorCode, sqlState: String = "HY000", message: String, duplicateKey: String? = nil) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
        self.duplicateKey = duplicateKey
    }

    /// True when the connection that raised this error must be discarded.
    public var isConnectionBroken: Bool { code.isConnectionBroken }

    /// Code and SQLSTATE only, so logs never leak data by accident.
    public var description: String { "MySQLError(code: \(code.rawValue), sqlState: \(sqlState))" }

    /// Code, SQLSTATE and message.
    public var debugDescription: String {
        "MySQLError(code: \(code.rawValue), sqlState: \(sqlState), message: \(message))"
    }

    static func poolTimeout(after timeout: Duration) -> Self {
        Self(code: .poolTimeout, message: "no pooled connection became free within \(timeout)")
    }

    static let poolClosed = Self(code: .poolClosed, message: "the pool is closed")

    static let connectionClosed = Self(code: .connectionClosed, message: "the connection is closed")

    /// The key named at the end of an ER_DUP_ENTRY message (`... for key 'NAME'`); nil when it names none.
    public static func duplicateKeyName(inServerMessage message: String) -> String? {
        // ER_DUP_ENTRY is "Duplicate entry '%-.192T' for key '%-.192s'" (MariaDB's errmsg-utf8.txt; MySQL 8.0.19 and
        // later write the key as table.key). The value comes first and may hold any text, the marker included, but
        // the key is last: the marker's last occurrence is the one before it. A message in another language
        // (lc_messages) has no such marker and names no key here.
        let prefix = Array("Duplicate entry '".utf8)
        let marker = Array("' for key '".utf8)
        let bytes = Array(message.utf8)
        guard bytes.count > prefix.count + marker.count, bytes.starts(with: prefix), bytes.last == UInt8(ascii: "'")
        else { return nil }
        var start = bytes.count - 1 - marker.count
        while start >= prefix.count {
            if bytes[start..<start + marker.count].elementsEqual(marker) {
                let name = bytes[(start + marker.count)..<(bytes.count - 1)]
                return name.isEmpty ? nil : String(decoding: name, as: UTF8.self)
            }
            start -= 1
        }
        return nil
    }

    /// The text shown instead of a server message that may quote bound values.
    static func withheldMessage(for code: MySQLErrorCode) -> String {
        switch code {
        case .duplicateEntry: "duplicate entry for a unique key"
        case .deadlock: "deadlock found when trying to get lock; the transaction was rolled back"
        case .lockWaitTimeout: "lock wait timeout exceeded"
        case .noReferencedRow: "a foreign key constraint fails"
        case .queryInterrupted: "the statement was interrupted"
        default: "server error \(code.rawValue) (message withheld: it may quote bound values)"
        }
    }
}
