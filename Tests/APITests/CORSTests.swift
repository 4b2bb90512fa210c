@testable import API
import HTTPServer
import Testing

/// The CORS protocol of the Fetch standard for dashboards served from another origin.
@Suite struct CORSTests {
    private static let dashboard = "https://dash.example.com"
    private static let requestPath = "/requests/request/demo/main/1"

    private func api(_ origins: [String]) throws -> API {
        let api = API(cors: try CORSPolicy(allowing: origins))
        #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        return api
    }

    private static func corsFields(_ response: HTTPResponse) -> [String] {
        response.headers.fields.map(\.name).filter { $0.hasPrefix("Access-Control-") || $0 == "Vary" }
    }

    @Test func withoutAPolicyNoResponseCarriesCORSFields() {
        let api = API()
        #expect(api.call("POST", "/queues/demo/main/ingest").status == 202)
        let get = api.call("GET", Self.requestPath, headers: [("Origin", Self.dashboard)])
        #expect(get.status == 200)
        #expect(Self.corsFields(get).isEmpty)
        let preflight = api.call(
            "OPTIONS", Self.requestPath, headers: [("Origin", Self.dashboard), ("Access-Control-Request-Method", "GET")])
        #expect(preflight.status == 204)
        #expect(preflight.headers.fields.map(\.name) == ["Allow"])
        #expect(preflight.headers["Allow"] == "GET, HEAD, OPTIONS")
    }

    @Test(arguments: ["GET", "HEAD"])
    func anAllowedOriginReadsTheResponseAndItsFields(_ method: String) throws {
        let api = try api(["https://other.example.com", Self.dashboard])
        let response = api.call(method, Self.requestPath, headers: [("Origin", Self.dashboard)])
        #expect(response.status == 200)
        #expect(response.headers["Access-Control-Allow-Origin"] == Self.dashboard)
        #expect(response.headers["Vary"] == "Origin")
        let exposed = Set((response.headers["Access-Control-Expose-Headers"] ?? "").split(separator: ", ").map(String.init))
        #expect(exposed.isSuperset(of: ["ETag", "Location", "Retry-After", "X-Request-ID"]), "\(exposed)")
        // A script sends no cookies or credentials here, so none are allowed.
        #expect(response.headers["Access-Control-Allow-Credentials"] == nil)
    }

    /// The answer depends on Origin, so every response says `Vary: Origin`, including those a cache could store from
    /// a request without Origin (Fetch §3.2.5).
    @Test func anotherOriginOrNoneGetsOnlyVary() throws {
        let api = try api([Self.dashboard])
        for headers in [[("Origin", "https://evil.example.com")], [("Origin", "https://dash.example.com:8443")], [("Origin", "null")], []] {
            let response = api.call("GET", Self.requestPath, headers: headers)
            #expect(response.status == 200)
            #expect(Self.corsFields(response) == ["Vary"], "\(headers)")
            #expect(response.headers["Vary"] == "Origin")
        }
    }

    @Test func anyOriginIsAllowedWithAStarAndNothingVaries() throws {
        let api = try api(["*"])
        for headers in [[("Origin", "https://anything.example")], []] {
            let response = api.call("GET", Self.requestPath, headers: headers)
            #expect(response.headers["Access-Control-Allow-Origin"] == "*", "\(headers)")
            #expect(response.headers["Vary"] == nil, "\(headers)")
            #expect(response.headers["Access-Control-Expose-Headers"] != nil, "\(headers)")
        }
    }

    @Test(arguments: [
        (requestPath, "GET", "GET, HEAD", "GET, HEAD, OPTIONS"),
        ("/queues/demo/main", "GET", "GET, HEAD", "GET, HEAD, OPTIONS"),
        ("/queues/demo%2Fmain/ingest", "POST", "POST", "POST, OPTIONS"),
    ])
    func aPreflightIsAnswered204WithTheRoutesMethodsAndTheHeadersTheAPIReads(
        _ path: String, _ method: String, _ methods: String, _ allow: String
    ) throws {
        let api = try api([Self.dashboard])
        let response = api.call("OPTIONS", path, headers: [
            ("Origin", Self.dashboard), ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", "if-none-match"),
        ])
        #expect(response.status == 204)
        #expect(response.body.isEmpty)
        #expect(response.headers["Allow"] == allow)
        #expect(response.headers["Access-Control-Allow-Origin"] == Self.dashboard)
        #expect(response.headers["Vary"] == "Origin")
        #expect(response.headers["Access-Control-Allow-Methods"] == methods)
        let headers = Set((response.headers["Access-Control-Allow-Headers"] ?? "").split(separator: ", ").map { $0.lowercased() })
        #expect(headers.isSuperset(of: ["if-none-match", "content-type", "x-stovepipe-signature-256", "x-request-id"]), "\(headers)")
        #expect(Int(response.headers["Access-Control-Max-Age"] ?? "").map { $0 > 0 } == true)
    }

    @Test func aPreflightFromAnotherOriginIsAPlainOptionsAnswer() throws {
        let api = try api([Self.dashboard])
        let response = api.call("OPTIONS", Self.requestPath, headers: [
            ("Origin", "https://evil.example.com"), ("Access-Control-Request-Method", "GET"),
        ])
        #expect(response.status == 204)
        #expect(response.headers.fields.map(\.name) == ["Allow", "Vary"])
        // A preflight on a path without a resource is the 404 it would be.
        let unknown = api.call("OPTIONS", "/nowhere", headers: [("Origin", Self.dashboard), ("Access-Control-Request-Method", "GET")])
        #expect(unknown.status == 404)
        #expect(unknown.headers["Access-Control-Allow-Methods"] == nil)
    }

    /// A dashboard reads errors and 304s too: they carry the same fields, and a 304 the Vary its 200 would have
    /// (RFC 9110 §15.4.5).
    @Test func errorsAndNotModifiedCarryTheFields() throws {
        let api = try api([Self.dashboard])
        let tag = try #require(api.call("GET", Self.requestPath).etag)
        let notModified = api.call("GET", Self.requestPath, headers: [("Origin", Self.dashboard), ("If-None-Match", tag)])
        #expect(notModified.status == 304)
        #expect(notModified.headers["Access-Control-Allow-Origin"] == Self.dashboard)
        #expect(notModified.headers["Vary"] == "Origin")
        let missing = api.call("GET", "/requests/request/demo/main/9", headers: [("Origin", Self.dashboard)])
        #expect(missing.status == 404)
        #expect(missing.headers["Access-Control-Allow-Origin"] == Self.dashboard)
        #expect(missing.headers["Vary"] == "Origin")
    }

    @Test(arguments: [
        ("https://dash.example.com", "https://dash.example.com"),
        ("HTTPS://Dash.Example.COM", "https://dash.example.com"),
        ("https://dash.example.com:443", "https://dash.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:03000", "http://localhost:3000"),
        ("https://dash.example.com:8443", "https://dash.example.com:8443"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1", "http://127.0.0.1"),
    ])
    func originsAreKeptAsBrowsersSendThem(_ given: String, _ kept: String) throws {
        #expect(try CORSPolicy(allowing: [given]).origins == [kept])
    }

    @Test(arguments: [
        "https://dash.example.com/", "https://dash.example.com/app", "dash.example.com", "https://", "https://:8080",
        "https://dash.example.com:0", "https://dash.example.com:65536", "https://dash.example.com:", "https://a:b",
        "https://user@dash.example.com", "https://dash.example.com?x", "https://dash.example.com#x", "null", "",
        "https://dash example.com", "https://däsh.example.com", "1https://dash.example.com", "http://[::1", "http://[::1]x",
    ])
    func whatIsNoOriginIsRefusedNamingIt(_ value: String) {
        #expect(throws: CORSPolicy.InvalidOrigin.self) { try CORSPolicy(allowing: ["https://ok.example.com", value]) }
        do throws(CORSPolicy.InvalidOrigin) {
            _ = try CORSPolicy(allowing: [value])
        } catch {
            #expect(error.value == value)
            #expect(error.description.contains("'\(value)'"))
        }
    }
}
