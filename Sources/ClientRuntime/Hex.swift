/// Lower-case hex digits, as ASCII bytes: how digests and ids are written.
public enum HexDigits {
    public static let lowercase: [UInt8] = Array("0123456789abcdef".utf8)
}

extension Sequence<UInt8> {
    /// The bytes as lower-case hex, two digits each: how digests are written.
    public var lowercaseHex: String {
        var out: [UInt8] = []
        out.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            out.append(HexDigits.lowercase[Int(byte >> 4)])
            out.append(HexDigits.lowercase[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
