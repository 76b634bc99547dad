public import Messaging

/// Every command, event and query of every domain: the fleet's public language. Each type is
/// `<domain>.<Name>.v<N>` and conforms to `Contract`, with an example that fills every field.
///
/// `contracts/snapshot.json` records each one's JSON shape; a test fails when a change would break
/// a reader or writer of messages already in flight. A breaking change is a new version (a new
/// type beside the old one), never an edit.
///
/// The checkout's messages arrive with the domains that own them.
public enum ContractCatalog {
    public static let all: [any Contract.Type] = []
}
