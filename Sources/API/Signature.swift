import COpenSSL

/// Verifies webhook signatures: `sha256=<hex HMAC-SHA256(secret, raw body)>`, under any of one or more secrets.
public struct SignatureVerifier: Sendable {
    /// The first signs; with none, nothing verifies.
    private let secrets: [[UInt8]]

    /// The header names accepted, ours first, then GitHub's (same format).
    public static let headerNames = ["X-Stovepipe-Signature-256", "X-Hub-Signature-256"]

    /// A verifier for `secret`.
    public init(secret: [UInt8]) { self.secrets = [secret] }

    /// A verifier that accepts a signature by any of `secrets` (during a rotation, the old and the new), each checked
    /// once; with none it accepts no signature.
    public init(secrets: [[UInt8]]) {
        var distinct: [[UInt8]] = []
        for secret in secrets where !distinct.contains(secret) { distinct.append(secret) }
        self.secrets = distinct
    }

    /// How many different secrets are accepted.
    public var secretCount: Int { secrets.count }

    /// HMAC-SHA256 of `body` under the first secret, through libcrypto.
    public func mac(_ body: [UInt8]) -> [UInt8] { secrets.first.map { Self.mac(body, secret: $0) } ?? [] }

    private static func mac(_ body: [UInt8], secret: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = secret.withUnsafeBytes { key in
            body.withUnsafeBytes { data in
                out.withUnsafeMutableBytes { result in
                    HMAC(EVP_sha256(), key.baseAddress, Int32(key.count),
                        data.baseAddress?.assumingMemoryBound(to: UInt8.self), data.count,
                        result.baseAddress?.assumingMemoryBound(to: UInt8.self), &length) != nil
                }
            }
        }
        return ok ? Array(out.prefix(Int(length))) : []
    }

    /// The header value a sender would compute for `body`.
    public func signature(for body: [UInt8]) -> String {
        "sha256=" + mac(body).map { byte in
            let digits = Array("0123456789abcdef".utf8)
            return String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]], as: UTF8.self)
        }.joined()
    }

    /// True when `header` is `sha256=` and the hex HMAC of `body` under one of the secrets, compared in constant time.
    public func verify(header: String?, body: [UInt8]) -> Bool {
        guard let header, header.hasPrefix("sha256=") else { return false }
        guard let given = Self.decodeHex(header.utf8.dropFirst(7)) else { return false }
        // Every secret is tried, a match or not, so the time taken does not tell which one matched.
        var matched = false
        for secret in secrets {
            let expected = Self.mac(body, secret: secret)
            guard !expected.isEmpty, given.count == expected.count else { continue }
            // CRYPTO_memcmp takes time independent of the contents, so the comparison leaks no prefix length.
            let equal = given.withUnsafeBytes { a in
                expected.withUnsafeBytes { b in CRYPTO_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 }
            }
            matched = matched || equal
        }
        return matched
    }

    private static func decodeHex(_ text: Substring.UTF8View) -> [UInt8]? {
        guard text.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count / 2)
        var high: UInt8?
        for character in text {
            let value: UInt8
            switch character {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = character - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): value = character - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): value = character - UInt8(ascii: "A") + 10
            default: return nil
            }
            if let h = high {
                bytes.append(h << 4 | value)
                high = nil
            } else {
                high = value
            }
        }
        return bytes
    }
}
