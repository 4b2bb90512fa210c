import CEpoll
import Glibc
import Logging
import Synchronization

/// An HTTP/1.1 server on raw sockets: epoll event loops read and parse, a bounded pool of worker
/// threads runs the responder (and may read a keep-alive connection's next request itself), and
/// responses go out without blocking a loop.
public final class HTTPServer: Sendable {
    private let context: ServerContext
    private let lifecycle = Mutex<Lifecycle>(.idle)
    private let boundPort = Atomic<Int>(0)

    private enum Lifecycle: Sendable {
        case idle
        case running(Running)
        case stopped
    }

    private struct Running: Sendable {
        let listenFD: Int32
        let loops: [EventLoop]
        let loopThreads: ThreadGroup
        let workerThreads: ThreadGroup
        let listenerReleased: WaitableCounter
    }

    /// Makes a server; nothing is bound until `start()`.
    /// - Parameters:
    ///   - configuration: Address, threads, limits and timeouts.
    ///   - responder: Answers every request, on a worker thread.
    ///   - logger: For start, stop and unexpected conditions (nothing per request above debug).
    ///   - observer: Receives connection and request events for metrics.
    public init(
        configuration: HTTPServerConfiguration, responder: any HTTPResponder, logger: Logger,
        observer: (any HTTPServerObserver)? = nil
    ) {
        context = ServerContext(configuration: configuration, responder: responder, observer: observer, logger: logger)
    }

    /// The bound port once started (also after shutdown); 0 before.
    public var port: Int { boundPort.load(ordering: .acquiring) }

    /// Binds, starts the event-loop and worker threads, and returns the port actually bound.
    /// - Throws: `HTTPServerError` if already started or the socket cannot be set up.
    @discardableResult
    public func start() throws(HTTPServerError) -> Int {
        try lifecycle.withLock { state throws(HTTPServerError) -> Int in
            guard case .idle = state else { throw .alreadyStarted }
            let running = try launch()
            state = .running(running)
            return boundPort.load(ordering: .acquiring)
        }
    }

    /// Reads the TLS certificate chain and key files again; connections accepted from now on use
    /// them, open ones keep the certificate they were made with. On failure nothing changes.
    /// - Throws: `HTTPServerError.tlsNotConfigured` without TLS, or why the files cannot be used.
    public func reloadTLS() throws(HTTPServerError) {
        guard let tls = context.tls else { throw .tlsNotConfigured }
        try tls.reload()
        context.logger.debug("TLS certificate reloaded", metadata: ["certificate": "\(tls.configuration.certificateChainPath)"])
    }

    /// The validity period of the TLS certificate new connections get; nil without TLS or before `start()`.
    public var tlsCertificateValidity: TLSCertificateValidity? { context.tls?.context?.validity }

    private func launch() throws(HTTPServerError) -> Running {
        let configuration = context.configuration
        // Before binding: a certificate or key that cannot be used fails start() with nothing to undo.
        try context.tls?.reload()
        // A peer closing mid-write must not kill the process; sends also pass MSG_NOSIGNAL, and
        // OpenSSL's socket BIO writes with write(2), which has no such flag.
        signal(SIGPIPE, SIG_IGN)
        let fileLimit = Sockets.raiseFileDescriptorLimit()
        let (listenFD, port) = try Sockets.listen(
            host: configuration.host, port: configuration.port, backlog: configuration.listenBacklog
        )
        let loopCount = max(1, configuration.eventLoopThreads)
        let listenerReleased = WaitableCounter()
        listenerReleased.change(by: loopCount)
        var loops: [EventLoop] = []
        do {
            for index in 0..<loopCount {
                loops.append(
                    try EventLoop(
                        index: index, listenFD: listenFD, context: context, listenerReleased: listenerReleased)
                )
            }
        } catch {
            for loop in loops { loop.closeDescriptors() }
            close(listenFD)
            throw error
        }
        boundPort.store(port, ordering: .releasing)

        let workerThreads = ThreadGroup()
        for index in 0..<max(1, configuration.workerThreads) {
            workerThreads.start(name: "http-worker-\(index)", stackSize: nil) { [context] in
                var worker = Worker(context: context)
                worker.run()
            }
        }
        let loopThreads = ThreadGroup()
        for loop in loops {
            loopThreads.start(name: "http-loop-\(loop.index)", stackSize: 512 * 1024) { loop.run() }
        }
        context.logger.info(
            "HTTP server listening",
            metadata: [
                "host": "\(configuration.host)", "port": "\(port)", "tls": "\(context.tls != nil)",
                "event_loops": "\(loopCount)",
                "workers": "\(configuration.workerThreads)", "open_files_limit": "\(fileLimit)",
            ]
        )
        return Running(
            listenFD: listenFD, loops: loops, loopThreads: loopThreads, workerThreads: workerThreads,
            listenerReleased: listenerReleased
        )
    }

    /// Stops gracefully: stops accepting, closes idle connections, answers requests still arriving 503,
    /// lets in-flight requests finish (answered with `Connection: close`), then joins the threads. After
    /// `shutdownTimeout` every connection is closed and threads get one more second. Safe to call more than once.
    public func shutdown() {
        let taken = lifecycle.withLock { state -> Running? in
            guard case .running(let running) = state else {
                state = .stopped
                return nil
            }
            state = .stopped
            return running
        }
        guard let running = taken else { return }
        let timeout = context.configuration.shutdownTimeout.nanoseconds
        let deadline = MonotonicClock.now() &+ timeout
        context.draining.store(true, ordering: .releasing)
        context.pool.stopKeepAliveWaits()
        for loop in running.loops { loop.post(.drain) }
        _ = running.listenerReleased.waitForZero(until: deadline)
        // Closed only once no loop polls it, so no loop can accept on a reused descriptor number.
        close(running.listenFD)

        var loopsJoined = running.loopThreads.join(until: deadline)
        if !loopsJoined {
            context.logger.info("HTTP shutdown deadline passed; closing remaining connections")
            for loop in running.loops { loop.post(.forceClose) }
            loopsJoined = running.loopThreads.join(until: MonotonicClock.now() + 1_000_000_000)
        }
        context.pool.stop()
        let workersJoined = running.workerThreads.join(
            until: max(deadline, MonotonicClock.now() + 1_000_000_000)
        )
        if loopsJoined {
            for loop in running.loops { loop.closeDescriptors() }
        }
        if loopsJoined && workersJoined {
            context.logger.info("HTTP server stopped")
        } else {
            context.logger.info(
                "HTTP server stopped with threads still running",
                metadata: ["loops_joined": "\(loopsJoined)", "workers_joined": "\(workersJoined)"]
            )
        }
    }

    deinit {
        shutdown()
    }
}

/// The observer of a server that was given none: it ignores every event.
private struct SilentObserver: HTTPServerObserver {}

/// A worker thread's loop: take a request, run the responder, hand the response to the connection.
/// An event loop also keeps one, for the requests its responder answers inline.
///
/// After a response on a keep-alive connection, a worker with nothing queued waits on that socket for
/// up to `workerKeepAliveWait` and answers the next request itself: a client that sends its next
/// request at once (a proxy's pooled connection, a script in a loop) skips the hand-off from the event
/// loop to a worker and the wake-ups it costs.
struct Worker {
    let context: ServerContext
    var writer: ResponseWriter
    // The context's responder, held here too: called through the worker's own field it is used in place, where
    // calling it through the shared context copied the existential on every request.
    private let responder: any HTTPResponder
    // The context's observer, held here for the same reason, and never nil (`SilentObserver` stands in):
    // unwrapping an optional existential field copied it on every request.
    private let observer: any HTTPServerObserver
    private let waiter = WorkerWaiter()
    /// Nil when the worker never waits for a next request (the loop's inline worker, or a wait of zero).
    private let readBuffer: ReadBuffer?
    private let keepAliveWaitNanoseconds: UInt64
    private let queueTimeout: UInt64
    /// The clock as this worker last read it, at the end of its last response (monotonic nanoseconds).
    private var lastClockReading: UInt64 = 0

    init(context: ServerContext, waitsForNextRequest: Bool = true) {
        self.context = context
        self.responder = context.responder
        self.observer = context.observer ?? SilentObserver()
        self.writer = ResponseWriter(serverName: context.configuration.serverName)
        let wait = context.configuration.workerKeepAliveWait.nanoseconds
        self.keepAliveWaitNanoseconds = waitsForNextRequest ? wait : 0
        self.queueTimeout = context.queueTimeout
        self.readBuffer = waitsForNextRequest && wait > 0 && waiter.keepAliveInterruptFD >= 0 ? ReadBuffer(byteCount: 16 * 1024) : nil
    }

    mutating func run() {
        while let item = context.pool.take(waiter) {
            // The reading taken for the last response's duration stands in for the time of taking, so the check
            // costs no clock read. It is never later, so a wait is never overstated; a worker that went idle since
            // found the queue empty, so what it takes next arrived after that reading and counts as no wait.
            if MonotonicClock.elapsed(since: item.receivedAt, now: lastClockReading) > queueTimeout {
                shed(item)
            } else {
                handle(item)
            }
        }
    }

    /// Answers `item`, which waited in the queue past `queueTimeout`, 503 without the responder: its client has
    /// likely given up, and the workers are behind. The connection stays open: a 503 is a complete response.
    private mutating func shed(_ item: consuming WorkItem) {
        observer.requestShed()
        let connection = item.connection
        perform(item.answerShed(context: context, writer: &writer), for: connection)
    }

    mutating func handle(_ first: consuming WorkItem) {
        var item = first
        var heldConnection = false
        while true {
            let connection = item.connection
            var actions = answer(&item)
            // A pipelined request that never blocks (a health check) is answered here, as the loop answers one that
            // arrives on its own: submitted, it could be shed by a queue full of slow work it does not wait for.
            if let pipelined = actions.dispatch?.parsed.request,
                responder.respondsInline(method: pipelined.method, rawPath: pipelined.rawPath),
                !actions.close, actions.protocolError == nil, let request = actions.dispatch.take()
            {
                item = request
                continue
            }
            if actions.isEmpty, let next = waitForNextRequest(on: connection) {
                heldConnection = true
                actions = next
                // Taken, not copied: the request moves out of the actions, which are dropped.
                if !actions.close, actions.protocolError == nil, let request = actions.dispatch.take() {
                    item = request
                    continue
                }
            }
            if heldConnection && connection.returnToLoop(writer: &writer).close { actions.close = true }
            perform(actions, for: connection)
            return
        }
    }

    /// Waits on `connection` for its next request; nil if the worker did not take the connection,
    /// else what reading it gave (nothing if the wait ended first).
    private mutating func waitForNextRequest(on connection: Connection) -> ConnectionActions? {
        guard let readBuffer, !context.draining.load(ordering: .relaxed), context.pool.beginKeepAliveWait(waiter) else {
            return nil
        }
        defer { context.pool.endKeepAliveWait(waiter) }
        guard connection.beginWorkerWait() else { return nil }
        var timeout = timespec(
            tv_sec: Int(keepAliveWaitNanoseconds / 1_000_000_000), tv_nsec: Int(keepAliveWaitNanoseconds % 1_000_000_000))
        let requestArrived = withUnsafeTemporaryAllocation(of: pollfd.self, capacity: 2) { descriptors in
            descriptors[0] = pollfd(fd: connection.fd, events: Int16(POLLIN) | CEPOLL_POLLRDHUP, revents: 0)
            descriptors[1] = pollfd(fd: waiter.keepAliveInterruptFD, events: Int16(POLLIN), revents: 0)
            // An interrupted wait (EINTR) ends the wait like a timeout: the loop takes over.
            let ready = ppoll(descriptors.baseAddress, 2, &timeout, nil)
            return ready > 0 && descriptors[0].revents != 0 && descriptors[1].revents == 0
        }
        guard requestArrived else { return ConnectionActions() }
        return connection.readForWaitingWorker(scratch: readBuffer.bytes, writer: &writer)
    }

    /// Runs the responder for `item` and hands the response to its connection. In-out: the request gets its
    /// peer and id in place and is lent to the responder, never copied.
    private mutating func answer(_ item: inout WorkItem) -> ConnectionActions {
        let connection = item.connection
        let requestID: String
        if let incoming = item.parsed.request.headers["X-Request-ID"], ServerContext.isSaneRequestID(incoming) {
            requestID = incoming
        } else {
            requestID = context.makeRequestID()
        }
        item.parsed.request.peer = connection.peer
        item.parsed.request.requestID = requestID
        var response: HTTPResponse
        do {
            response = try responder.respond(to: item.parsed.request)
        } catch {
            context.logger.debug(
                "responder threw; answering 500",
                metadata: ["http.request_id": "\(requestID)", "error.type": "\(type(of: error))"]
            )
            response = HTTPResponse(status: 500)
        }
        let afterSend = response.afterSend
        if !(200...999).contains(response.status) || !response.headers.fields.allSatisfy(ResponseWriter.isValid) {
            context.logger.debug(
                "responder produced an invalid response; answering 500", metadata: ["http.request_id": "\(requestID)"])
            response = HTTPResponse(status: 500)
        }
        let responderCloses = response.headers.fields.contains { field in
            field.name.caseInsensitiveEquals("Connection")
                && field.value.split(separator: ",").contains { $0.trimmingSpaces().caseInsensitiveEquals("close") }
        }
        let closes =
            !item.parsed.keepAlive || item.isLastOnConnection || responderCloses
            || context.draining.load(ordering: .relaxed)
        let bytes = writer.serialize(
            status: response.status, headers: response.headers, body: response.body, close: closes,
            version: item.parsed.request.version, requestID: requestID, omitBody: item.parsed.isHead,
            entityTag: response.entityTag
        )
        let actions = connection.complete(response: bytes, closes: closes, writer: &writer)
        lastClockReading = MonotonicClock.now()
        observer.requestCompleted(
            method: item.parsed.request.method, status: response.status,
            duration: .nanoseconds(Int64(clamping: MonotonicClock.elapsed(since: item.receivedAt, now: lastClockReading))),
            requestBytes: item.parsed.wireBytes, responseBytes: bytes.count
        )
        afterSend?()
        return actions
    }

    private mutating func perform(_ first: ConnectionActions, for connection: Connection) {
        var actions = first
        for _ in 0..<3 {
            if let error = actions.protocolError { context.observer?.protocolError(error) }
            if let item = actions.dispatch, !context.pool.submit(item) {
                context.observer?.requestShed()
                actions = connection.shed(writer: &writer)
                continue
            }
            if actions.close {
                connection.loop.post(.close(connection))
            } else if actions.resumeReading {
                connection.loop.post(.resume(connection))
            }
            return
        }
    }
}

extension WorkItem {
    /// Answers this request 503 with Retry-After, without the responder, because it waited in the queue past the
    /// queue timeout; the connection stays open unless the request ends it.
    func answerShed(context: ServerContext, writer: inout ResponseWriter) -> ConnectionActions {
        let closes = !parsed.keepAlive || isLastOnConnection || context.draining.load(ordering: .relaxed)
        let bytes = writer.shedResponse(close: closes, version: parsed.request.version, omitBody: parsed.isHead)
        return connection.complete(response: bytes, closes: closes, writer: &writer)
    }
}

/// A worker's own read buffer, for the requests it reads while it waits on a keep-alive connection.
final class ReadBuffer {
    let bytes: UnsafeMutableRawBufferPointer

    init(byteCount: Int) {
        bytes = .allocate(byteCount: byteCount, alignment: 16)
    }

    deinit {
        bytes.deallocate()
    }
}

extension Substring {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
