import Domain
import Foundation
import HTTPServer

/// The strong entity tags of the single-resource reads and their `If-None-Match` precondition (RFC 9110 §8.8.3,
/// §13.1.2): a dashboard that polls gets 304 without a body while the resource is unchanged.
enum ConditionalRead {
    /// The tag of `request`'s body: its version and its creation second.
    static func tag(of request: Request) -> EntityTag {
        // The body is written from the stored record alone (nothing from the clock), and every write of the record
        // raises its version. The creation second tells apart two records with one id and version, as in-memory
        // storage makes after a restart and a database restored from a backup after new ingests; a change to the
        // body's format must change this tag too.
        let seconds = Int64(exactly: request.createdAt.timeIntervalSince1970.rounded(.down)) ?? 0
        return EntityTag(request.version, UInt64(bitPattern: seconds))
    }

    /// The tag of a queue's body: its version, 0 for a configured queue never stored (its first row is version 1).
    static func tag(ofQueueVersion version: UInt64) -> EntityTag {
        EntityTag(version)
    }

    /// Whether `headers`' If-None-Match field matches `tag`, the current representation's: `*`, or a listed tag equal
    /// to it by weak comparison (RFC 9110 §13.1.2, §8.8.3.2). False without the field, and when any line of it is not
    /// `*` or a list of entity tags: a malformed condition is ignored, and the client gets the body.
    static func noneMatch(_ headers: HTTPHeaders, matches tag: EntityTag) -> Bool {
        var matched = false
        // By index, not `for field in`: a copy of each field would retain and release its two strings, on every
        // request to the hot path, which rarely has the field at all.
        let fields = headers.fields
        for index in fields.indices where isIfNoneMatch(fields[index].name) {
            var value = fields[index].value
            guard let lineMatches = value.withUTF8({ evaluate($0, tag) }) else { return false }
            matched = matched || lineMatches
        }
        return matched
    }

    @inline(__always)
    private static func isIfNoneMatch(_ name: String) -> Bool {
        // Field names compare case-insensitively (RFC 9110 §5.1); the length rules out nearly every other at once.
        guard name.utf8.count == 13 else { return false }
        return spellsIfNoneMatch(name)
    }

    private static func spellsIfNoneMatch(_ name: String) -> Bool {
        var name = name
        return name.withUTF8 { bytes in
            let lower: StaticString = "if-none-match"
            for index in 0..<13 {
                let byte = bytes[index]
                let folded = byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
                guard folded == lower.utf8Start[index] else { return false }
            }
            return true
        }
    }

    /// Whether one field line matches `tag`; nil when it is neither `*` nor `#entity-tag`.
    private static func evaluate(_ value: UnsafeBufferPointer<UInt8>, _ tag: EntityTag) -> Bool? {
        let space = UInt8(ascii: " "), tab = UInt8(ascii: "\t"), comma = UInt8(ascii: ","), quote = UInt8(ascii: "\"")
        var index = 0
        func skipWhitespace() {
            while index < value.count, value[index] == space || value[index] == tab { index += 1 }
        }
        skipWhitespace()
        if index < value.count, value[index] == UInt8(ascii: "*") {
            index += 1
            skipWhitespace()
            return index == value.count ? true : nil
        }
        var matched = false
        while true {
            // RFC 9110 §5.6.1.2: a recipient accepts empty list elements.
            while index < value.count, value[index] == space || value[index] == tab || value[index] == comma { index += 1 }
            guard index < value.count else { return matched }
            // entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE, W/ case-sensitive (§8.8.3); weak comparison ignores it.
            if value[index] == UInt8(ascii: "W"), index + 1 < value.count, value[index + 1] == UInt8(ascii: "/") { index += 2 }
            guard index < value.count, value[index] == quote else { return nil }
            let start = index
            index += 1
            // etagc = %x21 / %x23-7E / obs-text
            while index < value.count, value[index] != quote {
                let byte = value[index]
                guard byte == 0x21 || byte >= 0x23 && byte != 0x7F else { return nil }
                index += 1
            }
            guard index < value.count else { return nil }
            index += 1
            if !matched, tag.matches(UnsafeBufferPointer(rebasing: value[start..<index])) { matched = true }
            skipWhitespace()
            guard index == value.count || value[index] == comma else { return nil }
        }
    }
}
