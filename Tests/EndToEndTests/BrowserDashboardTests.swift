import Foundation
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What a dashboard in a browser on another origin meets on the wire: CORS (`--cors-allow-origin`) and conditional GETs.
extension EndToEndTests {
    @Test func aValueThatIsNoOriginIsRefusedAtStartUpNamingIt() throws {
        for (arguments, environment, source, value) in [
            (["--cors-allow-origin", "https://dash.example.com/"], [:], "--cors-allow-origin", "https://dash.example.com/"),
            (["--cors-allow-origin", "*", "--cors-allow-origin", "dash.example.com"], [:], "--cors-allow-origin", "dash.example.com"),
            ([], ["STOVEPIPE_CORS_ALLOW_ORIGIN": "https://ok.example.com, https://dash.example.com/app"], "STOVEPIPE_CORS_ALLOW_ORIGIN",
                "https://dash.example.com/app"),
            ([], ["STOVEPIPE_CORS_ALLOW_ORIGIN": "https://ok.example.com,,https://b.example.com"], "STOVEPIPE_CORS_ALLOW_ORIGIN", ""),
            ([], ["STOVEPIPE_CORS_ALLOW_ORIGIN": " "], "STOVEPIPE_CORS_ALLOW_ORIGIN", ""),
        ] as [([String], [String: String], String, String)] {
            // Accepted, serve would run on: the run is stopped after its timeout and fails the test.
            let finished = try runStovepipe(["serve", "--port", "0"] + arguments, environment: environment, timeout: 20)
            #expect(finished.status == 64, "\(arguments) \(environment): \(finished.stderr)")
            #expect(finished.stderr.hasPrefix("Error: \(source)"), "\(arguments) \(environment): \(finished.stderr)")
            #expect(finished.stderr.contains("'\(value)'"), "\(arguments) \(environment): \(finished.stderr)")
        }
    }

    @Test func aDashboardOnAnAllowedOriginReadsAndRevalidates() throws {
        let dashboard = "http://localhost:3000"
        for (arguments, environment) in [
            (["--cors-allow-origin", "https://other.example.com", "--cors-allow-origin", "HTTP://localhost:3000"], [:]),
            ([], ["STOVEPIPE_CORS_ALLOW_ORIGIN": "https://other.example.com, http://localhost:3000"]),
        ] as [([String], [String: String])] {
            let server = try RunningServer(arguments: arguments, environment: environment)
            #expect(try http("POST", "/queues/demo/main/ingest", port: server.port).status == 202)
            let path = "/requests/request/demo/main/1"

            let preflight = try http("OPTIONS", path, port: server.port, headers: [
                ("Origin", dashboard), ("Access-Control-Request-Method", "GET"), ("Access-Control-Request-Headers", "if-none-match"),
            ])
            #expect(preflight.status == 204, "\(preflight.text)")
            #expect(preflight.headers["access-control-allow-origin"] == dashboard)
            #expect(preflight.headers["access-control-allow-methods"] == "GET, HEAD")
            #expect(preflight.headers["access-control-allow-headers"]?.contains("If-None-Match") == true)

            let get = try http("GET", path, port: server.port, headers: [("Origin", dashboard)])
            #expect(get.status == 200)
            #expect(get.headers["access-control-allow-origin"] == dashboard)
            #expect(get.headers["vary"] == "Origin")
            #expect(get.headers["access-control-expose-headers"]?.contains("ETag") == true)
            let tag = try #require(get.headers["etag"])

            for method in ["GET", "HEAD"] {
                let revalidated = try http(method, path, port: server.port, headers: [("Origin", dashboard), ("If-None-Match", tag)])
                // RFC 9110 §15.4.5: no content, the tag and the Vary the 200 would have had.
                #expect(revalidated.status == 304, "\(method)")
                #expect(revalidated.body.isEmpty, "\(method)")
                #expect(revalidated.headers["content-length"] == nil, "\(method)")
                #expect(revalidated.headers["etag"] == tag, "\(method)")
                #expect(revalidated.headers["vary"] == "Origin", "\(method)")
                #expect(revalidated.headers["access-control-allow-origin"] == dashboard, "\(method)")
            }

            let other = try http("GET", path, port: server.port, headers: [("Origin", "https://evil.example.com")])
            #expect(other.status == 200)
            #expect(other.headers["access-control-allow-origin"] == nil)
            #expect(server.terminate() == 0)
        }
    }

    /// Without the option nothing changes: no CORS field on any answer, OPTIONS as before.
    @Test func withoutTheOptionNoAnswerCarriesCORSFields() throws {
        let server = try RunningServer(arguments: [])
        #expect(try http("POST", "/queues/demo/main/ingest", port: server.port).status == 202)
        let origin = ("Origin", "https://dash.example.com")
        let get = try http("GET", "/requests/request/demo/main/1", port: server.port, headers: [origin])
        let preflight = try http("OPTIONS", "/requests/request/demo/main/1", port: server.port, headers: [
            origin, ("Access-Control-Request-Method", "GET"),
        ])
        #expect(preflight.status == 204)
        #expect(preflight.headers["allow"] == "GET, HEAD, OPTIONS")
        for response in [get, preflight] {
            #expect(response.headers.keys.filter { $0.hasPrefix("access-control-") || $0 == "vary" }.isEmpty, "\(response.headers)")
        }
        #expect(get.headers["etag"] != nil)
        #expect(server.terminate() == 0)
    }
}
