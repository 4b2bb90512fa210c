import Foundation
import Glibc
import HTTPServer
import Logging

/// Why a helper program could not be run.
enum ChildProcessError: Error, CustomStringConvertible {
    case notFound(String)
    case failed(String, status: Int32, stderr: String)

    var description: String {
        switch self {
        case .notFound(let name): "\(name) is not on PATH"
        case .failed(let name, let status, let stderr): "\(name) exited \(status): \(stderr)"
        }
    }
}

/// What a finished child process left behind.
struct ChildOutput {
    var status: Int32
    var timedOut: Bool
    var stdout: String
    var stderr: String

    var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }
}

/// A helper program (openssl, curl, python3) run with an argument vector, never through a shell;
/// its output goes to files so a chatty child cannot block on a full pipe.
final class ChildProcess {
    private let process = Process()
    private let name: String
    private let stdoutURL: URL
    private let stderrURL: URL

    init(_ name: String, _ arguments: [String], directory: URL) throws {
        guard let path = Self.locate(name) else { throw ChildProcessError.notFound(name) }
        self.name = name
        let unique = UUID().uuidString
        stdoutURL = directory.appendingPathComponent("\(name)-\(unique).out")
        stderrURL = directory.appendingPathComponent("\(name)-\(unique).err")
        guard FileManager.default.createFile(atPath: stdoutURL.path, contents: nil),
            FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        else { throw ChildProcessError.failed(name, status: -1, stderr: "cannot create output files") }
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: stdoutURL)
        process.standardError = try FileHandle(forWritingTo: stderrURL)
        try process.run()
    }

    /// Waits for the child to exit; past `timeout` it is terminated and `timedOut` is set.
    func wait(timeout: Duration = .seconds(60)) -> ChildOutput {
        let exited = eventually(timeout: timeout) { !process.isRunning }
        if !exited {
            process.terminate()
        }
        process.waitUntilExit()
        let stdout = (try? String(contentsOf: stdoutURL, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? ""
        return ChildOutput(status: process.terminationStatus, timedOut: !exited, stdout: stdout, stderr: stderr)
    }

    /// Runs `name` to completion and returns its output, throwing unless it exited 0.
    @discardableResult
    static func run(_ name: String, _ arguments: [String], directory: URL, timeout: Duration = .seconds(60)) throws
        -> ChildOutput
    {
        let output = try ChildProcess(name, arguments, directory: directory).wait(timeout: timeout)
        guard output.status == 0, !output.timedOut else {
            throw ChildProcessError.failed(name, status: output.status, stderr: output.stderr)
        }
        return output
    }

    private static func locate(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
        for directory in path.split(separator: ":") {
            let candidate = "\(directory)/\(name)"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        return nil
    }
}

/// A temporary directory with self-signed certificates for 127.0.0.1, made by the openssl CLI.
final class TLSFixture {
    let directory: URL

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("stovepipe-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: directory) }

    /// A fresh RSA key and a self-signed certificate for IP 127.0.0.1 with common name `name`.
    func makeCertificate(_ name: String) throws -> (certificate: String, key: String) {
        let certificate = path("\(name).crt")
        let key = path("\(name).key")
        try ChildProcess.run(
            "openssl",
            [
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)",
                "-addext", "subjectAltName=IP:127.0.0.1", "-days", "1", "-keyout", key, "-out", certificate,
            ],
            directory: directory
        )
        return (certificate, key)
    }

    func path(_ file: String) -> String { directory.appendingPathComponent(file).path }

    /// A server configuration for HTTPS with `certificate` (the defaults of `testConfiguration`).
    func configuration(
        _ certificate: (certificate: String, key: String), _ change: (inout HTTPServerConfiguration) -> Void = { _ in }
    ) -> HTTPServerConfiguration {
        testConfiguration { configuration in
            configuration.tls = TLSConfiguration(certificateChainPath: certificate.certificate, privateKeyPath: certificate.key)
            change(&configuration)
        }
    }

    /// Runs `curl` with `arguments` after `--silent --show-error`.
    func curl(_ arguments: [String], timeout: Duration = .seconds(30)) throws -> ChildOutput {
        try ChildProcess("curl", ["--silent", "--show-error", "--max-time", "20"] + arguments, directory: directory)
            .wait(timeout: timeout)
    }

    /// Starts the Python TLS client below in `mode`, with the server's port and the CA file to trust.
    func startPython(_ mode: String, port: Int, trusting caFile: String, _ extra: [String] = []) throws -> ChildProcess {
        try ChildProcess("python3", ["-c", pythonTLSClient, mode, String(port), caFile] + extra, directory: directory)
    }
}

/// A Python ssl client with the modes the TLS tests need; it prints what it saw, one fact a line.
let pythonTLSClient = #"""
import os, socket, ssl, sys, threading, time

mode, port, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3]
extra = sys.argv[4:]

def context(maximum=None, minimum=None, weak=False):
    ctx = ssl.create_default_context(cafile=cafile)
    if weak:
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    if minimum is not None:
        ctx.minimum_version = minimum
    if maximum is not None:
        ctx.maximum_version = maximum
    return ctx

def connect(ctx=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return (ctx or context()).wrap_socket(raw, server_hostname="127.0.0.1")

def common_name(sock):
    return dict(item[0] for item in sock.getpeercert()["subject"])["commonName"]

class Reader:
    def __init__(self, sock):
        self.sock, self.buffer = sock, bytearray()

    def more(self, what):
        chunk = self.sock.recv(262144)
        if not chunk:
            raise EOFError("closed while reading " + what)
        self.buffer += chunk

    def response(self):
        while b"\r\n\r\n" not in self.buffer:
            self.more("a head")
        end = self.buffer.index(b"\r\n\r\n")
        head = bytes(self.buffer[:end])
        del self.buffer[:end + 4]
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self.more("a body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, headers, body

def request(sock, reader, path):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path).encode())
    return reader.response()

if mode == "pipeline":
    sock = connect()
    reader = Reader(sock)
    sock.sendall(b"".join(("GET /p/%d HTTP/1.1\r\nHost: t\r\n\r\n" % i).encode() for i in range(3)))
    for _ in range(3):
        status, headers, _ = reader.response()
        print(status, headers.get("x-path"))

elif mode == "bulk":
    # A body of many TLS records one way, a response that fills the socket buffers the other.
    sock = connect()
    reader = Reader(sock)
    size = int(extra[0])
    body = (bytes(range(256)) * (size // 256 + 1))[:size]
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    status, _, echoed = reader.response()
    print("echo", status, len(echoed), echoed == body)
    sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    status, _, big = reader.response()
    print("big", status, len(big), big == (bytes(range(251)) * (len(big) // 251 + 1))[:len(big)])
    status, headers, _ = request(sock, reader, "/after")
    print("after", status, headers.get("x-path"))

elif mode == "subject":
    sock = connect()
    status, _, _ = request(sock, Reader(sock), "/subject")
    print(common_name(sock), status)

elif mode == "reload":
    # extra: a file to create once the first connection is up, and one to wait for before going on.
    first = connect()
    first_reader = Reader(first)
    print("first", common_name(first), request(first, first_reader, "/1")[0], flush=True)
    open(extra[0], "w").close()
    deadline = time.time() + 20
    while not os.path.exists(extra[1]) and time.time() < deadline:
        time.sleep(0.01)
    second = connect()
    print("second", common_name(second), request(second, Reader(second), "/2")[0])
    print("first-again", common_name(first), request(first, first_reader, "/3")[0])

elif mode == "versions":
    # extra: the highest version to offer, "1.1" or "1.2", or the lowest, "min1.3".
    choice = extra[0]
    try:
        if choice == "1.1":
            ctx = context(maximum=ssl.TLSVersion.TLSv1_1, minimum=ssl.TLSVersion.TLSv1, weak=True)
        elif choice == "1.2":
            ctx = context(maximum=ssl.TLSVersion.TLSv1_2)
        else:
            ctx = context(minimum=ssl.TLSVersion.TLSv1_3)
    except (ValueError, ssl.SSLError) as error:
        print("unavailable", error)
        sys.exit(0)
    try:
        sock = connect(ctx)
    except ssl.SSLError as error:
        print("refused", error.reason)
        sys.exit(0)
    except OSError as error:
        print("closed", error)
        sys.exit(0)
    print("accepted", sock.version(), request(sock, Reader(sock), "/v")[0])

elif mode == "closed":
    # extra: a file to create once the response is in. Then how the server closed the idle connection.
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock = context().wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
    print("status", request(sock, Reader(sock), "/idle")[0], flush=True)
    open(extra[0], "w").close()
    try:
        print("close_notify" if sock.recv(1) == b"" else "data")
    except ssl.SSLEOFError:
        print("no close_notify")

elif mode == "cipher":
    # extra: an OpenSSL TLS 1.2 cipher list to offer. Then the suite negotiated, or how the server refused.
    ctx = context(maximum=ssl.TLSVersion.TLSv1_2)
    try:
        ctx.set_ciphers(extra[0])
    except ssl.SSLError as error:
        print("unavailable", error)
        sys.exit(0)
    try:
        sock = connect(ctx)
    except ssl.SSLError as error:
        print("refused", error.reason)
        sys.exit(0)
    print("accepted", sock.cipher()[0], request(sock, Reader(sock), "/cipher")[0])

elif mode == "ticket":
    # A TLS 1.2 session: whether the server issued a session ticket, and whether a second connection resumed it.
    ctx = context(maximum=ssl.TLSVersion.TLSv1_2)
    first = connect(ctx)
    print("status", request(first, Reader(first), "/first")[0])
    session = first.session
    print("ticket", session.has_ticket)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    second = ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session)
    print("resumed", second.session_reused, request(second, Reader(second), "/second")[0])

elif mode == "soak":
    connections, per_connection = int(extra[0]), int(extra[1])
    answered, errors, lock = [0], [], threading.Lock()
    def client(index):
        try:
            sock = connect()
            reader = Reader(sock)
            for number in range(per_connection):
                path = "/soak/%d/%d" % (index, number)
                status, headers, _ = request(sock, reader, path)
                if status != 200 or headers.get("x-path") != path:
                    raise RuntimeError("%s answered %d for %s" % (path, status, headers.get("x-path")))
                with lock:
                    answered[0] += 1
            sock.close()
        except Exception as error:
            with lock:
                errors.append(repr(error))
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(connections)]
    for thread in threads:
        thread.start()
    deadline = time.time() + 90
    for thread in threads:
        thread.join(max(0.0, deadline - time.time()))
    print("answered", answered[0])
    print("errors", len(errors))
    for error in errors[:5]:
        print("error", error)
elif mode == "late":
    # extra: seconds to wait before the handshake, then after it before the one request.
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    time.sleep(float(extra[0]))
    sock = context().wrap_socket(raw, server_hostname="127.0.0.1")
    time.sleep(float(extra[1]))
    try:
        print("status", request(sock, Reader(sock), "/late")[0])
    except (EOFError, ConnectionError, ssl.SSLError) as error:
        print("closed", error)

elif mode == "alpn":
    # extra: the protocols to offer, comma-separated. Then what the server selected, or how it refused.
    ctx = context()
    ctx.set_alpn_protocols(extra[0].split(","))
    try:
        sock = connect(ctx)
    except ssl.SSLError as error:
        # Python has no reason name for alert 120; its message has OpenSSL's text for it.
        print("refused", "no application protocol" if "alert no application protocol" in str(error) else error)
        sys.exit(0)
    print("selected", sock.selected_alpn_protocol(), request(sock, Reader(sock), "/alpn")[0])

elif mode == "raw":
    # extra: bytes to send, with Python escapes (\r\n), and optionally half-close. Then every response until the server closes.
    sock = connect()
    reader = Reader(sock)
    sock.sendall(extra[0].encode().decode("unicode_escape").encode("latin-1"))
    if extra[1:] == ["half-close"]:
        # A TCP FIN without close_notify, as a client that shuts its sending side down does.
        socket.socket.shutdown(sock, socket.SHUT_WR)
    try:
        while True:
            status, headers, _ = reader.response()
            print(status, headers.get("connection", "-"), flush=True)
    except (EOFError, ConnectionError, ssl.SSLError):
        print("closed")

else:
    sys.exit("unknown mode " + mode)
"""#
