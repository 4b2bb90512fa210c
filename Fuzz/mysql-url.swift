// libFuzzer target `mysql-url` (scripts/fuzz): MySQLConfiguration(url:), compiled into one module with its source.
// Input: the URL, tried as given and after `mysql://`; an accepted one must be consistent (host or socket, a user,
// a port, a lock wait below the read timeout).
import Glibc

private func fail(_ message: String) -> Never {
    _ = message.withCString { write(2, $0, strlen($0)) }
    abort()
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    for url in [text, "mysql://" + text] {
        let parsed: MySQLConfiguration
        do {
            parsed = try MySQLConfiguration(url: url)
        } catch {
            _ = error.description
            continue
        }
        if (parsed.host == nil) == (parsed.socketPath == nil) { fail("host \(String(describing: parsed.host)) and socket \(String(describing: parsed.socketPath))\n") }
        if parsed.user.isEmpty { fail("empty user\n") }
        if let wait = parsed.lockWaitTimeoutSeconds, wait >= parsed.readTimeoutSeconds { fail("lock wait \(wait) >= read timeout\n") }
        if parsed.port == 0 { fail("port 0\n") }
        if parsed.database?.contains("/") == true { fail("database with /\n") }
        _ = parsed.redactedURL
        _ = parsed.debugDescription
    }
    return 0
}
