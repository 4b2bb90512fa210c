internal import CMySQL

/// The process-wide state of the MySQL client library.
public enum MySQLLibrary {
    // A `static let` initialiser runs exactly once, under swift_once, even when threads race to it.
    private static let initResult: Int32 = cmysql_library_init()

    /// Initialises the client library once; later calls only report the first result.
    ///
    /// The C API requires mysql_library_init "prior to spawning any threads"; the executable calls this first
    /// thing in `main`. Connections call it too, so tests and tools need not, and the once-guard keeps it safe.
    /// - Throws: `MySQLError` with code `libraryInitFailed` when the library could not initialise.
    public static func initialize() throws(MySQLError) {
        guard initResult == 0 else {
            throw MySQLError(code: .libraryInitFailed, message: "mysql_library_init failed (\(initResult))")
        }
    }

    /// Releases the library's global state; call last, after every connection and pool is closed.
    public static func end() {
        // mysql_library_end is a macro alias of mysql_server_end, which Swift imports as a function.
        mysql_server_end()
    }

    /// The client library version, such as `3.3.20`.
    public static var clientVersion: String {
        guard let text = mysql_get_client_info() else { return "unknown" }
        return String(cString: text)
    }
}
