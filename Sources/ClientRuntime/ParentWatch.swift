#if canImport(Glibc)
import Glibc
#endif

/// A child of `shopfleet dev` ends when its supervisor does, even when the supervisor is killed
/// with SIGKILL (and so cannot stop it): otherwise the orphans keep running, holding their ports,
/// and the next `make run` cannot start. The supervisor names itself in `SHOPFLEET_PARENT_PID`;
/// a thread of the child checks twice a second that it is still the parent, and sends the child
/// SIGTERM (a graceful stop) when it is not.
public enum ParentWatch {
    public static let variable = "SHOPFLEET_PARENT_PID"

    public static func startIfAsked() {
        guard let text = getenv(variable).map({ String(cString: $0) }), let parent = pid_t(text), parent > 1 else { return }
        guard getppid() == parent else {
            // Already orphaned (or started by someone else with the variable set): stop now.
            kill(getpid(), SIGTERM)
            return
        }
        let thread = ConnectionThread(name: "parent watch")
        _ = thread.execute {
            while getppid() == parent { usleep(500_000) }
            kill(getpid(), SIGTERM)
        }
    }
}
