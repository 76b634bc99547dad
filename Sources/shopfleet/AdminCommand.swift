import ArgumentParser
import Auth
import FoundationEssentials
import Identity
import PostgresClient
import WorkerHost

struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Make a registered customer an admin, or take it back (an operator's act, kept in identity.role_changes).",
        discussion: """
            Runs against identity's schema with the operator's database identity (SHOPFLEET_DATABASE_URL: the \
            migrations identity, a member of identity's role). Nothing over the broker or the edge can change a role. \
            The customer's next access token (at login or refresh) carries the new role.
            """,
        subcommands: [Grant.self, Revoke.self])

    struct Options: ParsableArguments {
        @Argument(help: "The customer's email.") var email: String
        @Option(help: "Why (kept with the change).") var reason = "no reason given"
        @Option(help: "Who makes the change (kept with it; default: $USER).") var by: String?
        @OptionGroup var connection: ConnectionOptions

        func set(_ role: String) async throws {
            let actor = by ?? ProcessInfo.processInfo.environment["USER"] ?? "operator"
            let client = PostgresClient(configuration: try PostgresConfiguration(url: try connection.configuration().databaseURL), maximumConnections: 1)
            do {
                let change = try await AdminRoles.set(role, email: email, by: actor, reason: reason, database: client)
                await client.close()
                print(change.oldRole == change.newRole
                      ? "\(change.email) (\(change.customerID)) was already \(role); recorded"
                      : "\(change.email) (\(change.customerID)): \(change.oldRole) → \(change.newRole), by \(actor): \(reason)")
            } catch let failure as AdminRoles.Failure {
                await client.close()
                throw ValidationError(failure.description)
            } catch {
                await client.close()
                throw error
            }
        }
    }

    struct Grant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Give a registered customer the admin role.")
        @OptionGroup var options: Options
        func run() async throws { try await options.set("admin") }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take the admin role back (the customer stays a customer).")
        @OptionGroup var options: Options
        func run() async throws { try await options.set("customer") }
    }
}

struct KeysCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys",
        abstract: "Access-token keys: make identity's Ed25519 signing key, print the public key the edge needs.",
        subcommands: [Generate.self, Public.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print a new signing key (<kid>:<seed>) for SHOPFLEET_JWT_SIGNING_KEY; keep it in a secret, not in a file you commit.")
        @Option(help: "The key's id, carried in every token's header.") var kid = "k" + String(Int(Date().timeIntervalSince1970))
        func run() async throws { print(AccessTokens.generateSigningKey(kid: kid)) }
    }

    struct Public: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the public key (<kid>:<x>) of SHOPFLEET_JWT_SIGNING_KEY, for the edge's SHOPFLEET_JWT_PUBLIC_KEYS.")
        func run() async throws {
            let key = try ShopfleetConfiguration.current().value(ShopfleetConfiguration.jwtSigningKey)
            guard !key.isEmpty else { throw ValidationError("SHOPFLEET_JWT_SIGNING_KEY (or _FILE) is not set") }
            do { print(try AccessTokens.publicKey(of: key)) } catch { throw ValidationError("\(error)") }
        }
    }
}
