import ClientRuntime
@testable import Messaging
import Synchronization
import Testing

private final class Counters: Sendable {
    let holders = Atomic<Int>(0)
    let most = Atomic<Int>(0)
    let done = Atomic<Int>(0)
}

@Suite("AsyncSemaphore")
struct AsyncSemaphoreTests {
    /// Never more holders than permits, and every waiter gets through once permits come back.
    @Test func boundsConcurrentHoldersAndLetsEveryoneThrough() async throws {
        let semaphore = AsyncSemaphore(3)
        let counters = Counters()
        let until = ContinuousClock.now + .seconds(10)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<50 {
                group.addTask {
                    await semaphore.acquire()
                    let now = counters.holders.add(1, ordering: .relaxed).newValue
                    var seen = counters.most.load(ordering: .relaxed)
                    while now > seen, !counters.most.compareExchange(expected: seen, desired: now, ordering: .relaxed).exchanged {
                        seen = counters.most.load(ordering: .relaxed)
                    }
                    // The first holders stay until three hold at once (or 10 s pass): a semaphore
                    // that let fewer in at a time would show it in the peak.
                    while counters.most.load(ordering: .relaxed) < 3 && ContinuousClock.now < until {
                        try? await Task.sleep(for: .milliseconds(1))
                    }
                    counters.holders.subtract(1, ordering: .relaxed)
                    semaphore.release()
                    counters.done.add(1, ordering: .relaxed)
                }
            }
        }
        let finished = counters.done.load(ordering: .relaxed)
        let peak = counters.most.load(ordering: .relaxed)
        #expect(finished == 50)
        #expect(peak == 3)
    }
}
