import API
import Domain
import Foundation
import Synchronization
import Testing

@Suite struct JSONWriterTests {
    /// What the API used to send: JSONEncoder with RFC 3339 dates, sorted keys, unescaped slashes.
    static func encoderBytes(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }

    static let awkwardTexts = [
        "", "plain", "a/b/c", "quote \" and backslash \\", "tab\tnewline\ncarriage\rform\u{0C}back\u{08}",
        "nul \u{00} unit \u{1F} del \u{7F}", "ünïcødé ✓ 𝄞", "</script>", "git://host/repo?ref=main#c1",
    ]

    static let dates = [
        Date(timeIntervalSince1970: 0), Date(timeIntervalSince1970: 1_795_950_715),
        Date(timeIntervalSince1970: 1_795_950_715.999_9), Date(timeIntervalSince1970: 951_782_400.5),
        Date(timeIntervalSince1970: 4_102_444_799),
    ]

    @Test(arguments: awkwardTexts)
    func stringsMatchJSONEncoder(_ text: String) throws {
        var json = JSONWriter()
        json.string(text)
        #expect(String(decoding: json.bytes, as: UTF8.self) == (try Self.encoderBytes(text)))
    }

    @Test(arguments: awkwardTexts)
    func appendedStringsAreEscapedAsStrings(_ text: String) {
        var appended = JSONWriter()
        appended.beginArray()
        appended.string(appending: { $0.append(contentsOf: text.utf8) })
        appended.string(appending: { $0.append(contentsOf: text.utf8) })
        appended.endArray()
        var direct = JSONWriter()
        direct.beginArray()
        direct.string(text)
        direct.string(text)
        direct.endArray()
        #expect(appended.bytes == direct.bytes)
    }

    @Test(arguments: dates)
    func datesMatchJSONEncoderISO8601(_ date: Date) throws {
        var json = JSONWriter()
        json.date(date)
        #expect(String(decoding: json.bytes, as: UTF8.self) == (try Self.encoderBytes(date)))
    }

    @Test func requestsMatchTheirEncodableShape() throws {
        let queue = try QueueName("monorepo/main")
        for (index, text) in Self.awkwardTexts.enumerated() {
            for date in Self.dates {
                let request = Request(
                    id: RequestID(queue: queue, number: UInt64(index + 1)), uri: SourceURI(text),
                    state: .processing, buildStrategy: .incrementalSinceGreen,
                    baseURI: index.isMultiple(of: 2) ? nil : SourceURI(text + "~1"), version: UInt64.max - UInt64(index),
                    createdAt: date, updatedAt: date.addingTimeInterval(1.25))
                let api = API()
                try api.requests.create(request)
                let response = api.call("GET", "/requests/\(request.id.description)")
                #expect(response.status == 200)
                #expect(String(decoding: response.body, as: UTF8.self) == (try Self.encoderBytes(request)))
            }
        }
    }

    @Test func integersAreSpelledAsStringSpellsThem() {
        let unsigned: [UInt64] = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1_000, 65_535, 4_294_967_296, 999_999_999_999_999_999,
            10_000_000_000_000_000_000, UInt64.max - 1, UInt64.max]
        for value in unsigned {
            var json = JSONWriter()
            json.integer(value)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(value))
        }
        let signed: [Int64] = [0, 7, -1, -9, -10, -1_234_567, Int64.min, Int64.max]
        for value in signed {
            var json = JSONWriter()
            json.integer(value)
            #expect(String(decoding: json.bytes, as: UTF8.self) == String(value))
        }
        var json = JSONWriter()
        json.beginArray()
        json.integer(UInt8(200))
        json.integer(Int32(-5))
        json.endArray()
        #expect(String(decoding: json.bytes, as: UTF8.self) == "[200,-5]")
    }

    @Test func decimalsArePaddedToTheirMinimumDigits() {
        let cases: [(UInt64, Int, String)] = [
            (0, 1, "0"), (0, 3, "000"), (5, 2, "05"), (42, 6, "000042"), (123, 2, "123"), (7, 0, "7"),
            (UInt64.max, 20, "18446744073709551615"), (1, 25, "00000000000000000001"),
        ]
        for (value, minimumDigits, expected) in cases {
            var bytes: [UInt8] = []
            JSONWriter.appendDecimal(value, minimumDigits: minimumDigits, to: &bytes)
            #expect(String(decoding: bytes, as: UTF8.self) == expected, "\(value), \(minimumDigits)")
        }
    }

    @Test func requestIDsAreWrittenAsTheirDescription() throws {
        for id in [
            RequestID(queue: try QueueName("q"), number: 1), RequestID(queue: try QueueName("monorepo/main"), number: 42),
            RequestID(queue: try QueueName("A.b_c-d/e"), number: UInt64.max),
        ] {
            var direct = JSONWriter()
            direct.beginArray()
            direct.string(id)
            direct.string(id)
            direct.endArray()
            var described = JSONWriter()
            described.beginArray()
            described.string(id.description)
            described.string(id.description)
            described.endArray()
            #expect(direct.bytes == described.bytes)
        }
    }

    @Test func objectsArraysAndScalarsAreSeparated() {
        var json = JSONWriter()
        json.beginObject()
        json.key("a")
        json.beginArray()
        json.integer(-1)
        json.bool(true)
        json.null()
        json.string(nil)
        json.number(0.5)
        json.number(.infinity)
        json.beginObject()
        json.endObject()
        json.endArray()
        json.key("b")
        json.string("x")
        json.endObject()
        #expect(String(decoding: json.bytes, as: UTF8.self) == #"{"a":[-1,true,null,null,0.5,null,{}],"b":"x"}"#)
    }

    @Test func rfc3339AgreesWithTheGregorianCalendarFrom1970To9999() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = try #require(TimeZone(identifier: "UTC"))
        var checked = 0
        // A day and a few seconds apart, so leap days, month ends and every time of day come up.
        var seconds: Int64 = 0
        while seconds < 253_402_300_800 {
            let date = Date(timeIntervalSince1970: TimeInterval(seconds))
            let parts = calendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
            let expected = String(
                format: "%04d-%02d-%02dT%02d:%02d:%02dZ", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0,
                parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
            if RFC3339.string(date, fractionDigits: 0) != expected {
                Issue.record("\(seconds): \(RFC3339.string(date, fractionDigits: 0)) is not \(expected)")
                break
            }
            checked += 1
            seconds += 86_400 * 17 + 3_607
        }
        #expect(checked > 170_000)
    }

    @Test(arguments: [
        (951_782_400.0, "2000-02-29T00:00:00Z"), (4_107_542_399.0, "2100-02-28T23:59:59Z"),
        (4_107_542_400.0, "2100-03-01T00:00:00Z"), (253_402_300_799.0, "9999-12-31T23:59:59Z"),
        (253_402_300_800.0, "10000-01-01T00:00:00Z"), (-1.0, "1969-12-31T23:59:59Z"),
    ])
    func rfc3339EdgesOfTheCalendarAndOfTheFastPath(_ seconds: Double, _ expected: String) {
        #expect(RFC3339.string(Date(timeIntervalSince1970: seconds), fractionDigits: 0) == expected)
    }

    @Test func rfc3339MillisecondsOfAnInstantAreThoseOfItsDate() {
        var instants: [RFC3339.Instant] = []
        let seconds: [Int64] = [
            0, 59, 86_399, 86_400, 951_782_399, 951_782_400, 1_795_950_715, 1_795_950_716, 4_107_542_399,
            253_402_300_799, 253_402_300_800, -1, -86_401,
        ]
        for second in seconds {
            // Half a millisecond past each: the Date's floating-point interval then truncates to the same millisecond.
            for nanoseconds in [500_000, 123_500_000, 999_500_000] {
                instants.append(RFC3339.Instant(seconds: second, nanoseconds: nanoseconds))
            }
        }
        var second: Int64 = 0
        while second < 253_402_300_800 {
            instants.append(RFC3339.Instant(seconds: second, nanoseconds: Int(second % 1_000) * 1_000_000 + 500_000))
            second += 86_400 * 371 + 3_607
        }
        for instant in instants {
            var expected: [UInt8] = []
            let interval = Double(instant.seconds) + Double(instant.nanoseconds) / 1e9
            RFC3339.append(Date(timeIntervalSince1970: interval), fractionDigits: 3, to: &expected)
            var appended: [UInt8] = []
            RFC3339.appendMilliseconds(instant, to: &appended)
            #expect(String(decoding: appended, as: UTF8.self) == String(decoding: expected, as: UTF8.self), "\(instant)")
        }
    }

    @Test func rfc3339MillisecondsAcrossASecondBoundary() {
        func text(_ seconds: Int64, _ nanoseconds: Int) -> String {
            var bytes: [UInt8] = []
            RFC3339.appendMilliseconds(RFC3339.Instant(seconds: seconds, nanoseconds: nanoseconds), to: &bytes)
            return String(decoding: bytes, as: UTF8.self)
        }
        #expect(text(1_795_950_715, 999_999_999) == "2026-11-29T11:11:55.999Z")
        #expect(text(1_795_950_716, 0) == "2026-11-29T11:11:56.000Z")
        #expect(text(1_795_996_799, 999_000_000) == "2026-11-29T23:59:59.999Z")
        #expect(text(1_795_996_800, 1_000_000) == "2026-11-30T00:00:00.001Z")
        #expect(text(253_402_300_800, 7_000_000) == "10000-01-01T00:00:00.007Z")
    }

    static func milliseconds(_ instant: RFC3339.Instant, cache: RFC3339.SecondCache?) -> String {
        var bytes: [UInt8] = []
        RFC3339.appendMilliseconds(instant, to: &bytes, cache: cache)
        return String(decoding: bytes, as: UTF8.self)
    }

    @Test func rfc3339SecondCacheWritesWhatFormattingWithoutItWrites() {
        let cache = RFC3339.SecondCache()
        // The same second again (read from the cache), the next, an earlier one (not cached), a day's last second
        // and the next day's first, the ends of the cached range and one past it.
        let seconds: [Int64] = [
            1_795_950_715, 1_795_950_715, 1_795_950_716, 1_795_950_714, 1_795_950_716, 1_795_996_799, 1_795_996_800,
            1_795_996_800, 0, 253_402_300_799, 253_402_300_799, 253_402_300_800, -1,
        ]
        for (index, second) in seconds.enumerated() {
            let instant = RFC3339.Instant(seconds: second, nanoseconds: index * 76_923_076)
            #expect(Self.milliseconds(instant, cache: cache) == Self.milliseconds(instant, cache: nil), "\(instant)")
        }
    }

    @Test func rfc3339SecondCacheSharedByThreadsNeverMixesTwoSeconds() {
        let cache = RFC3339.SecondCache()
        let mismatches = Mutex(0)
        // Threads that move through the seconds together, so that they both read what another cached and replace
        // it; consecutive seconds are 86,461 s apart, so that their texts differ in every word.
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            var local = 0
            for step in 0..<20_000 {
                let instant = RFC3339.Instant(seconds: 1_700_000_000 + Int64(step / 8) * 86_461, nanoseconds: step * 997)
                if Self.milliseconds(instant, cache: cache) != Self.milliseconds(instant, cache: nil) { local += 1 }
            }
            mismatches.withLock { $0 += local }
        }
        #expect(mismatches.withLock { $0 } == 0)
    }

    @Test func rfc3339NowIsTheTimeDateReads() {
        let before = Date().timeIntervalSince1970
        let now = RFC3339.Instant.now()
        let after = Date().timeIntervalSince1970
        let interval = Double(now.seconds) + Double(now.nanoseconds) / 1e9
        #expect((0..<1_000_000_000).contains(now.nanoseconds))
        #expect(interval >= before - 0.001 && interval <= after + 0.001)
    }

    @Test func rfc3339KeepsTruncatedFractions() {
        let date = Date(timeIntervalSince1970: 1_795_950_715.123_9)
        #expect(RFC3339.string(date, fractionDigits: 3) == "2026-11-29T11:11:55.123Z")
        #expect(RFC3339.string(date, fractionDigits: 0) == "2026-11-29T11:11:55Z")
        #expect(RFC3339.string(Date(timeIntervalSince1970: 0), fractionDigits: 6) == "1970-01-01T00:00:00.000000Z")
        #expect(RFC3339.string(Date(timeIntervalSince1970: 0.5), fractionDigits: 6) == "1970-01-01T00:00:00.500000Z")
        #expect(RFC3339.string(Date(timeIntervalSince1970: -0.25), fractionDigits: 2) == "1969-12-31T23:59:59.75Z")
        #expect(RFC3339.string(Date(timeIntervalSince1970: .nan), fractionDigits: 3).hasSuffix("Z"))
    }
}
