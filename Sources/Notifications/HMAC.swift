import ClientRuntime
import Crypto

/// SHA-256 and HMAC-SHA256 (swift-crypto), for signing webhooks.
enum SHA256Digest {
    static func hash(_ message: [UInt8]) -> [UInt8] { Array(Crypto.SHA256.hash(data: message)) }
}

enum HMACSHA256 {
    static func authenticationCode(key: [UInt8], message: [UInt8]) -> [UInt8] {
        Array(HMAC<Crypto.SHA256>.authenticationCode(for: message, using: SymmetricKey(data: key)))
    }

    static func hex(key: [UInt8], message: [UInt8]) -> String {
        authenticationCode(key: key, message: message).lowercaseHex
    }
}
