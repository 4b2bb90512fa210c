import CEpoll
import Glibc
import Logging
import Synchronization

/// Work other threads hand to an event loop.
enum LoopMessage: Sendable {
    /// Close this connection (a worker finished its last response).
    case close(Connection)
    /// Read again from a connection whose reading was paused.
    case resume(Connection)
    /// Stop accepting and close connections as they become idle.
    case drain
    /// Close every connection now and exit.
    case forceClose
}

/// One epoll instance and the thread that runs it; other threads only post messages to it.
final class EventLoop: Sendable {
    let index: Int
    let epollFD: Int32
    let wakeFD: Int32
    let listenFD: Int32
    let context: ServerContext
    /// Counted down once this loop no longer polls the listening socket.
    let listenerReleased: WaitableCounter
    private let mailbox = Mutex<(messages: [LoopMessage], wakePending: Bool, closed: Bool)>(([], false, false))

    static let wakeToken = UInt64.max
    static let listenToken = UInt64.max - 1

    init(index: Int, listenFD: Int32, context: ServerContext, listenerReleased: WaitableCounter) throws(HTTPServerError)
    {
        let epollFD = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard epollFD >= 0 else { throw .systemCallFailed("epoll_create1", errno: errno) }
        let wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else {
            let code = errno
            close(epollFD)
            throw .systemCallFailed("eventfd", errno: code)
        }
        var wake = epoll_event()
        wake.events = EPOLLIN.rawValue
        wake.data.u64 = Self.wakeToken
        var listen = epoll_event()
        // EPOLLEXCLUSIVE: a new connection wakes one loop, not all of them.
        listen.events = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
        listen.data.u64 = Self.listenToken
        guard epoll_ctl(epollFD, EPOLL_CTL_ADD, wakeFD, &wake) == 0,
            epoll_ctl(epollFD, EPOLL_CTL_ADD, listenFD, &listen) == 0
        else {
            let code = errno
            close(wakeFD)
            close(epollFD)
            throw .systemCallFailed("epoll_ctl", errno: code)
        }
        self.index = index
        self.epollFD = epollFD
        self.wakeFD = wakeFD
        self.listenFD = listenFD
        self.context = context
        self.listenerReleased = listenerReleased
    }

    /// Queues `message` and wakes the loop.
    func post(_ message: LoopMessage) {
        mailbox.withLock { box in
            // After closeDescriptors the number may belong to another file: never write to it then.
            guard !box.closed else { return }
            box.messages.append(message)
            if box.wakePending { return }
            box.wakePending = true
            var one: UInt64 = 1
            _ = write(wakeFD, &one, MemoryLayout<UInt64>.size)
        }
    }

    func takeMessages() -> [LoopMessage] {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, MemoryLayout<UInt64>.size)
        return mailbox.withLock { box in
            box.wakePending = false
            defer { box.messages = [] }
            return box.messages
        }
    }

    /// Runs the loop on the calling thread until it has drained or been force-closed.
    func run() {
        let runner = LoopRunner(loop: self)
        runner.run()
    }

    /// Releases the epoll and eventfd descriptors; only once `run()` has returned.
    func closeDescriptors() {
        mailbox.withLock { box in
            guard !box.closed else { return }
            box.closed = true
            box.messages = []
            close(epollFD)
            close(wakeFD)
        }
    }
}

/// The state only the loop's own thread touches.
private final class LoopRunner {
    let loop: EventLoop
    let context: ServerContext
    var connections: [Connection?] = []
    var openCount = 0
    var serial: UInt32 = 0
    var draining = false
    var stopped = false
    var acceptPaused = false
    /// Failed accepts since the last one that worked, and when the first of them failed (monotonic nanoseconds).
    var acceptFailures = 0
    var acceptFailingSince: UInt64 = 0
    /// A descriptor held in reserve on /dev/null, -1 while not held: out of descriptors, closing it lets accept(2)
    /// take a waiting connection to answer it 503, instead of leaving it unanswered in the backlog.
    var spareFD: Int32
    /// Refused connections whose input is read and dropped until they close, by descriptor.
    var lingeringRefusals: [Int32: RefusalLinger] = [:]
    var writer: ResponseWriter
    /// Answers the requests the responder marks as never blocking, on this thread.
    var inlineWorker: Worker
    let scratch: UnsafeMutableRawBufferPointer
    let events: UnsafeMutableBufferPointer<epoll_event>
    let refusal: [UInt8]

    init(loop: EventLoop) {
        self.loop = loop
        self.context = loop.context
        self.writer = ResponseWriter(serverName: loop.context.configuration.serverName)
        self.inlineWorker = Worker(context: loop.context, waitsForNextRequest: false)
        self.scratch = .allocate(byteCount: 64 * 1024, alignment: 16)
        self.events = .allocate(capacity: 512)
        var headers = HTTPHeaders()
        headers.add("Retry-After", "1")
        self.refusal = writer.errorResponse(status: 503, message: "too many connections", extraHeaders: headers)
        self.spareFD = Self.openSpare()
    }

    deinit {
        scratch.deallocate()
        events.deallocate()
    }

    func run() {
        let tick = context.tickNanoseconds
        var nextTick = MonotonicClock.now() + tick
        while !stopped {
            let now = MonotonicClock.now()
            let waitMilliseconds = nextTick > now ? Int32(clamping: (nextTick - now + 999_999) / 1_000_000) : 0
            let count = epoll_wait(loop.epollFD, events.baseAddress, Int32(events.count), waitMilliseconds)
            if count < 0 {
                let code = errno
                if code != EINTR {
                    // Library code logs at info at most; the executable decides what is alarming.
                    context.logger.info("epoll_wait failed; event loop stopping", metadata: ["errno": "\(code)"])
                    break
                }
            }
            for index in 0..<max(0, Int(count)) {
                let event = events[index]
                switch event.data.u64 {
                case EventLoop.wakeToken: handleMessages()
                case EventLoop.listenToken: acceptConnections()
                case let token: handle(token: token, events: event.events)
                }
            }
            let after = MonotonicClock.now()
            if after >= nextTick {
                checkDeadlines(now: after)
                nextTick = after + tick
                if acceptPaused && !draining { resumeAccepting() }
            }
            if draining && openCount == 0 { break }
        }
        for case let connection? in connections { close(connection) }
        for fd in Array(lingeringRefusals.keys) { closeRefusal(fd) }
        if spareFD >= 0 { Glibc.close(spareFD) }
        spareFD = -1
        if !draining { releaseListener() }
    }

    // MARK: Connections

    func handle(token: UInt64, events: UInt32) {
        // Connections carry a serial from 1 up in the high half; a refused one lingering carries 0.
        if token >> 32 == 0 {
            discardRefusalInput(Int32(truncatingIfNeeded: token))
            return
        }
        let fd = Int(token & 0xFFFF_FFFF)
        guard fd < connections.count, let connection = connections[fd], connection.token == token else { return }
        let hangUp = events & (EPOLLRDHUP.rawValue | EPOLLHUP.rawValue | EPOLLERR.rawValue) != 0
        let actions = connection.handleEvents(
            readable: events & EPOLLIN.rawValue != 0, hangUp: hangUp, writable: events & EPOLLOUT.rawValue != 0,
            scratch: scratch, writer: &writer
        )
        perform(actions, for: connection)
    }

    func perform(_ first: ConnectionActions, for connection: Connection) {
        var actions = first
        var rereads = 0
        // Every round acts on all of `actions`: a shed answer never dispatches, and a read is retried here at most
        // `maxRereads` times, then queued behind the loop's other work, so no dispatch or close is ever dropped.
        while true {
            if let error = actions.protocolError { context.observer?.protocolError(error) }
            if let item = actions.dispatch,
                context.responder.respondsInline(method: item.parsed.request.method, rawPath: item.parsed.request.rawPath)
            {
                actions.dispatch = nil
                inlineWorker.handle(item)
            }
            if let item = actions.dispatch, !context.pool.submit(item) {
                context.observer?.requestShed()
                actions = connection.shed(writer: &writer)
                continue
            }
            if actions.close {
                close(connection)
            } else if actions.resumeReading {
                guard rereads < Self.maxRereads else {
                    connection.loop.post(.resume(connection))
                    return
                }
                rereads += 1
                actions = connection.handleEvents(
                    readable: true, hangUp: true, writable: true, scratch: scratch, writer: &writer
                )
                continue
            }
            return
        }
    }

    /// How often one `perform` reads a connection again before it lets the loop serve the others first.
    static let maxRereads = 3

    func close(_ connection: Connection) {
        guard connection.closeTransport() else { return }
        let fd = Int(connection.fd)
        if fd < connections.count, connections[fd]?.token == connection.token { connections[fd] = nil }
        openCount -= 1
        context.openConnections.subtract(1, ordering: .relaxed)
        context.observer?.connectionClosed(peer: connection.peer)
    }

    func checkDeadlines(now: UInt64) {
        for (fd, linger) in lingeringRefusals where now >= linger.deadline { closeRefusal(fd) }
        shedExpiredRequests(now: now)
        for case let connection? in connections {
            let actions = connection.checkDeadlines(now: now, writer: &writer)
            perform(actions, for: connection)
        }
    }

    /// Answers 503 this loop's queued requests that waited past the queue timeout, so the timeout holds while
    /// every worker is busy. Taken out of the queue under its lock, none can also be taken by a worker.
    func shedExpiredRequests(now: UInt64) {
        let queueTimeout = context.queueTimeout
        let loop = self.loop
        let expired = context.pool.remove { item in
            item.connection.loop === loop && MonotonicClock.elapsed(since: item.receivedAt, now: now) > queueTimeout
        }
        for item in expired {
            context.observer?.requestShed()
            perform(item.answerShed(context: context, writer: &writer), for: item.connection)
        }
    }

    // MARK: Accepting

    func acceptConnections() {
        // Bounded per wake-up so reads on existing connections are not starved by a connect storm.
        for _ in 0..<128 {
            guard let accepted = Sockets.accept(loop.listenFD) else { return }
            guard let (fd, peer) = accepted else {
                // Out of descriptors, the spare answers the waiting connection 503; without one, and on other errors,
                // the loop stops polling the listener for a tick instead of spinning on it. Logged once per stretch
                // of failures, which lasts as long as descriptors are short: not once per tick.
                let code = errno
                let outOfDescriptors = code == EMFILE || code == ENFILE
                // accept(2) takes a descriptor number before it looks for a connection (Linux's __sys_accept4_file),
                // so a full table fails it with nothing waiting, as on the pass after a refusal: no connection failed,
                // and the listener, level-triggered, wakes the loop again when one comes.
                if outOfDescriptors && !listenerHasWaitingConnection() { return }
                context.observer?.acceptFailed(errno: code)
                if acceptFailures == 0 {
                    acceptFailingSince = MonotonicClock.now()
                    context.logger.info(
                        outOfDescriptors && spareFD >= 0
                            ? "accept failed; answering new connections 503 with a reserved descriptor until one works"
                            : "accept failed; pausing accepts, retrying every tick until one works",
                        metadata: ["errno": "\(code)", "error": "\(String(cString: strerror(code)))"])
                }
                acceptFailures += 1
                if outOfDescriptors && refuseWithSpareDescriptor() { continue }
                pauseAccepting()
                return
            }
            if acceptFailures > 0 {
                let paused = MonotonicClock.elapsed(since: acceptFailingSince, now: MonotonicClock.now())
                context.logger.info(
                    "accepting again",
                    metadata: ["failed_accepts": "\(acceptFailures)", "paused.ms": "\(paused / 1_000_000)"])
                acceptFailures = 0
            }
            if draining {
                Glibc.close(fd)
                continue
            }
            let open = context.openConnections.add(1, ordering: .relaxed).newValue
            if open > context.configuration.maxConnections {
                context.openConnections.subtract(1, ordering: .relaxed)
                refuse(fd: fd, peer: peer)
                continue
            }
            let transport: any ConnectionTransport
            if let tls = context.tls {
                guard let session = tls.makeTransport(fd: fd) else {
                    context.logger.info("cannot set up TLS for a connection; closing it", metadata: ["peer": "\(peer)"])
                    Glibc.close(fd)
                    context.openConnections.subtract(1, ordering: .relaxed)
                    continue
                }
                transport = session
            } else {
                transport = SocketTransport(fd: fd)
            }
            serial = serial == UInt32.max ? 1 : serial + 1
            let token = UInt64(serial) << 32 | UInt64(UInt32(fd))
            let connection = Connection(
                fd: fd, transport: transport, token: token, peer: peer, loop: loop, context: context)
            var event = epoll_event()
            event.events = Connection.loopEvents
            event.data.u64 = token
            guard epoll_ctl(loop.epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else {
                _ = connection.closeTransport()
                context.openConnections.subtract(1, ordering: .relaxed)
                continue
            }
            if Int(fd) >= connections.count {
                connections.append(
                    contentsOf: repeatElement(nil, count: max(Int(fd) + 1, connections.count * 2) - connections.count))
            }
            connections[Int(fd)] = connection
            openCount += 1
            context.observer?.connectionOpened(peer: peer)
        }
    }

    /// Beyond `maxConnections`: a best-effort 503, then a lingering close.
    func refuse(fd: Int32, peer: String) {
        // A TLS client could not read a plain-text 503: it only gets the close.
        if context.tls == nil {
            refusal.withUnsafeBytes { bytes in
                _ = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
        }
        context.observer?.connectionRefused(peer: peer)
        // RFC 9112 §9.6: closed with the client's request unread, the socket would answer it with a reset, which
        // can discard the 503 before the client reads it and fails a client still sending its body. So the write
        // side is shut (the client reads the 503 and end of stream) and input is read and dropped until the client
        // closes, `lingerTimeout` passes or `lingerByteLimit` bytes came. Beyond `maxLingeringRefusals` at once a
        // flood of refused connections must not hold descriptors: those are closed at once.
        guard lingeringRefusals.count < Self.maxLingeringRefusals else {
            Glibc.close(fd)
            return
        }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue
        event.data.u64 = UInt64(UInt32(bitPattern: fd))
        guard Glibc.shutdown(fd, Int32(SHUT_WR)) == 0, epoll_ctl(loop.epollFD, EPOLL_CTL_ADD, fd, &event) == 0 else {
            Glibc.close(fd)
            return
        }
        lingeringRefusals[fd] = RefusalLinger(deadline: MonotonicClock.now() &+ context.lingerTimeout)
    }

    /// Out of descriptors: frees the spare, accepts one waiting connection in its place, answers it and closes it,
    /// then takes the spare back (the technique of libev, libuv and nginx). False when there is no spare, or accept
    /// failed again (another thread took the freed descriptor): the caller pauses accepting then.
    func refuseWithSpareDescriptor() -> Bool {
        guard spareFD >= 0 else { return false }
        Glibc.close(spareFD)
        spareFD = -1
        defer { spareFD = Self.openSpare() }
        // Nil: nothing waits any more (another loop took it).
        guard let accepted = Sockets.accept(loop.listenFD) else { return true }
        guard let (fd, _) = accepted else { return false }
        // Unlike `refuse`, no lingering close: that would hold the descriptor the spare needs back. Input that came
        // already is read first, since closing with unread input sends a reset that can discard the 503 (RFC 9112
        // §9.6); a request still on its way can still meet that reset.
        for _ in 0..<4 {
            let count = recv(fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            guard count > 0 || (count < 0 && errno == EINTR) else { break }
        }
        // A TLS client could not read a plain-text 503: it only gets the close.
        if context.tls == nil {
            refusal.withUnsafeBytes { bytes in
                _ = send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            }
        }
        Glibc.close(fd)
        return true
    }

    /// Whether a connection waits on the listener now, without accepting it.
    func listenerHasWaitingConnection() -> Bool {
        var request = pollfd(fd: loop.listenFD, events: Int16(POLLIN), revents: 0)
        return poll(&request, 1, 0) > 0 && request.revents & Int16(POLLIN) != 0
    }

    /// The descriptor `refuseWithSpareDescriptor` frees; -1 if even that cannot be opened.
    static func openSpare() -> Int32 {
        open("/dev/null", O_RDONLY | O_CLOEXEC)
    }

    /// Refused connections lingering at once on one loop.
    static let maxLingeringRefusals = 256

    /// Reads and drops what a lingering refused connection sent; closes it at end of stream, on an error or
    /// past the byte limit.
    func discardRefusalInput(_ fd: Int32) {
        guard var linger = lingeringRefusals[fd] else { return }
        while true {
            let count = recv(fd, scratch.baseAddress, scratch.count, Int32(MSG_DONTWAIT))
            if count > 0 {
                linger.discarded += count
                if linger.discarded > context.lingerByteLimit { break }
                continue
            }
            if count < 0 && errno == EINTR { continue }
            if count < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                lingeringRefusals[fd] = linger
                return
            }
            break
        }
        closeRefusal(fd)
    }

    func closeRefusal(_ fd: Int32) {
        guard lingeringRefusals.removeValue(forKey: fd) != nil else { return }
        Glibc.close(fd)
    }

    func pauseAccepting() {
        var event = epoll_event()
        _ = epoll_ctl(loop.epollFD, EPOLL_CTL_DEL, loop.listenFD, &event)
        acceptPaused = true
    }

    func resumeAccepting() {
        if spareFD < 0 { spareFD = Self.openSpare() }
        var event = epoll_event()
        event.events = EPOLLIN.rawValue | EPOLLEXCLUSIVE.rawValue
        event.data.u64 = EventLoop.listenToken
        if epoll_ctl(loop.epollFD, EPOLL_CTL_ADD, loop.listenFD, &event) == 0 { acceptPaused = false }
    }

    func releaseListener() {
        if !acceptPaused {
            var event = epoll_event()
            _ = epoll_ctl(loop.epollFD, EPOLL_CTL_DEL, loop.listenFD, &event)
        }
        acceptPaused = true
        loop.listenerReleased.change(by: -1)
    }

    // MARK: Messages

    func handleMessages() {
        for message in loop.takeMessages() {
            switch message {
            case .close(let connection):
                close(connection)
            case .resume(let connection):
                let actions = connection.handleEvents(
                    readable: true, hangUp: true, writable: true, scratch: scratch, writer: &writer
                )
                perform(actions, for: connection)
            case .drain:
                guard !draining else { continue }
                draining = true
                releaseListener()
                for case let connection? in connections {
                    perform(connection.beginDrain(writer: &writer), for: connection)
                }
            case .forceClose:
                stopped = true
            }
        }
    }
}

/// A refused connection that lingers: when it is closed at the latest, and how much of its input was dropped.
private struct RefusalLinger {
    let deadline: UInt64
    var discarded = 0
}
