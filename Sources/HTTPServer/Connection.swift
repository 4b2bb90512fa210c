import CEpoll
import Glibc
import Synchronization

/// What a step under a connection's lock asks its caller to do once the lock is released.
struct ConnectionActions {
    /// A complete request for the worker pool.
    var dispatch: WorkItem?
    /// Close the connection (on its event loop).
    var close = false
    /// Reading stopped while a request was handled and may start again.
    var resumeReading = false
    /// A protocol error to report to the observer.
    var protocolError: HTTPProtocolError?

    /// Nothing to do: the connection waits for its next request.
    var isEmpty: Bool { dispatch == nil && !close && !resumeReading && protocolError == nil }
}

/// One accepted connection: its transport, parser and pending output behind one lock, shared by its
/// event loop (reads, timers, closing) and the worker answering its current request (writes, and
/// reads while it waits for the next request).
// The transport is only ever used inside `state.withLock`: a TLS transport's SSL* must never be
// used by two threads at once, and the lock makes the loop and the worker take turns.
//
// After answering, the worker may keep the connection for a moment to read the next request itself
// (`beginWorkerWait`): the loop's epoll interest is then disarmed, so the loop neither wakes for it nor
// touches it, until the worker gives it back (`returnToLoop`).
final class Connection: Sendable {
    /// What the event loop watches on an open connection, edge-triggered.
    static let loopEvents = EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLRDHUP.rawValue | EPOLLET.rawValue

    let fd: Int32
    /// `fd` and a per-loop serial, so a stale epoll event never reaches a reused descriptor.
    let token: UInt64
    let peer: String
    let loop: EventLoop
    let context: ServerContext
    /// When the connection was accepted (monotonic nanoseconds); the TLS handshake clock starts here.
    let acceptedAt: UInt64
    private let state: Mutex<State>

    private enum Lifecycle: Sendable {
        case open
        /// The last response is out and our side is shut; input is read and dropped until the peer
        /// closes or the deadline passes (RFC 9112 §9.6).
        case lingering(until: UInt64)
        case closed
    }

    private struct State: Sendable {
        var transport: any ConnectionTransport
        var parser: HTTPRequestParser
        var lifecycle = Lifecycle.open
        /// A worker has the current request; nothing else is parsed until it answers.
        var inFlight = false
        /// The worker that answered the last request waits on the socket for the next one.
        var workerWaiting = false
        /// The loop's epoll registration reports nothing: a worker holds the connection.
        var loopInterestDisarmed = false
        var outgoing: [UInt8] = []
        var outgoingSent = 0
        /// No further request will be served; close once output is flushed.
        var closeAfterResponses = false
        var peerClosed = false
        /// Input dropped while lingering; past `lingerByteLimit` the connection closes before its deadline.
        var lingerDiscarded = 0
        var readPaused = false
        var draining = false
        var requestsStarted = 0
        var headStartedAt: UInt64?
        var bodyStartedAt: UInt64?
        var lastActivity: UInt64
        var lastWriteProgress: UInt64

        var hasPendingOutput: Bool { outgoingSent < outgoing.count }

        var isOpen: Bool {
            if case .open = lifecycle { return true }
            return false
        }

        /// Sends what is queued; false when the connection broke.
        mutating func flush(now: UInt64) -> Bool {
            while outgoingSent < outgoing.count {
                let sent = outgoingSent
                let result = outgoing.withUnsafeBytes { bytes in
                    transport.write(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
                }
                switch result {
                case .transferred(let count):
                    outgoingSent += count
                    lastWriteProgress = now
                case .wouldBlock:
                    return true
                case .endOfStream, .failed, .handshakeFailed:
                    return false
                }
            }
            outgoing = []
            outgoingSent = 0
            return true
        }

        /// Queues `bytes` behind any pending output and sends what the socket takes.
        mutating func send(_ bytes: [UInt8], now: UInt64) -> Bool {
            if hasPendingOutput {
                outgoing.append(contentsOf: bytes)
                return true
            }
            outgoing = bytes
            outgoingSent = 0
            lastWriteProgress = now
            return flush(now: now)
        }

        /// Parses and dispatches what the buffered input allows, then closes or lingers if done.
        mutating func process(
            _ connection: Connection, now: UInt64, writer: inout ResponseWriter, actions: inout ConnectionActions
        ) {
            guard isOpen else { return }
            let context = connection.context
            parsing: while !inFlight && !closeAfterResponses && !hasPendingOutput {
                switch parser.next() {
                case .needMoreBytes:
                    break parsing
                case .sendContinue:
                    guard send(ResponseWriter.continueResponse, now: now) else {
                        actions.close = true
                        return
                    }
                case .request(let request):
                    requestsStarted += 1
                    inFlight = true
                    let isLast = requestsStarted >= context.configuration.maxRequestsPerConnection
                    // Pipelined bytes behind a request that ends the connection are never served.
                    if !request.keepAlive || isLast || draining { closeAfterResponses = true }
                    actions.dispatch = WorkItem(
                        connection: connection, parsed: request, receivedAt: now, isLastOnConnection: isLast
                    )
                case .failure(let error):
                    actions.protocolError = error
                    closeAfterResponses = true
                    guard send(writer.errorResponse(error), now: now) else {
                        actions.close = true
                        return
                    }
                }
            }
            // The header and body clocks run only while the server is ready to parse (not behind our own backlog).
            // RFC 9112 §2.2 asks that one empty line before a request be ignored; more start the clock, or a
            // CRLF sent just inside each idle timeout would hold the connection without ever sending a head.
            let readyToParse = !inFlight && !closeAfterResponses && !hasPendingOutput
            if readyToParse && parser.isReadingHead
                && (parser.bufferedByteCount > 0 || parser.hasExtraLeadingEmptyLines)
            {
                if headStartedAt == nil { headStartedAt = now }
            } else {
                headStartedAt = nil
            }
            // The body clock starts at the end of the header section, or once a 100 Continue is out: the client
            // may wait for it before sending the body (RFC 9110 §10.1.1).
            if readyToParse && !parser.isReadingHead && parser.isMidRequest {
                if bodyStartedAt == nil { bodyStartedAt = now }
            } else {
                bodyStartedAt = nil
            }
            // Nothing in flight and nothing unsent: the parse loop took every complete request, so the parser
            // waits for bytes, however many it holds (a body bigger than the pause limit, say; its own limits
            // bound them). Left paused, it would wait for an edge that never comes.
            if readPaused && !inFlight && !hasPendingOutput {
                readPaused = false
                actions.resumeReading = true
            }
            guard !inFlight && !hasPendingOutput else { return }
            if peerClosed {
                // The client will send nothing more and is owed nothing more.
                actions.close = true
            } else if closeAfterResponses {
                transport.shutdownWrite()
                lifecycle = .lingering(until: now + context.lingerTimeout)
                parser = HTTPRequestParser(limits: parser.limits)
            }
        }

        /// Answers the request still arriving when shutdown began 503 and closes (lingering), without
        /// waiting for the rest of it: no response was promised to a request not yet received, and a
        /// stalled client would otherwise hold shutdown until its header or body timeout. The 503 tells
        /// the client the request was not processed, so it may send it again elsewhere (RFC 9110 §15.6.4).
        mutating func refusePartialRequest(
            _ connection: Connection, now: UInt64, writer: inout ResponseWriter, actions: inout ConnectionActions
        ) {
            closeAfterResponses = true
            var headers = HTTPHeaders()
            headers.add("Retry-After", "1")
            let response = writer.errorResponse(status: 503, message: "server shutting down", extraHeaders: headers)
            guard send(response, now: now) else {
                actions.close = true
                return
            }
            process(connection, now: now, writer: &writer, actions: &actions)
        }

        /// Reads until the socket is drained, parsing after every read so buffering stays bounded.
        mutating func readAvailable(
            _ connection: Connection, scratch: UnsafeMutableRawBufferPointer, untilDrained: Bool, now: UInt64,
            writer: inout ResponseWriter, actions: inout ConnectionActions
        ) {
            var handshaking = !transport.isEstablished
            while !readPaused && !peerClosed {
                let result = transport.read(into: scratch)
                if handshaking && transport.isEstablished {
                    // The idle clock starts when the TLS handshake completes, not at accept: a handshake slower than
                    // the idle timeout (a slow network, a CPU-bound handshake backlog) must not count as idleness, or
                    // the connection is closed before the client could send its first request (RFC 9112 §9.5 lets a
                    // server close an *idle* connection).
                    lastActivity = now
                    handshaking = false
                }
                switch result {
                case .transferred(let count):
                    lastActivity = now
                    switch lifecycle {
                    case .closed:
                        return
                    case .lingering:
                        lingerDiscarded += count
                        if lingerDiscarded > connection.context.lingerByteLimit {
                            actions.close = true
                            return
                        }
                    case .open:
                        if !closeAfterResponses {
                            parser.append(UnsafeRawBufferPointer(rebasing: scratch[0..<count]))
                            process(connection, now: now, writer: &writer, actions: &actions)
                            if actions.close { return }
                            // Input waits while a request is handled or a response is unsent; past
                            // the limit, stop reading and let TCP flow control push back.
                            if (inFlight || hasPendingOutput)
                                && parser.bufferedByteCount >= connection.context.pausedReadLimit
                            {
                                readPaused = true
                            }
                        }
                    }
                    // A short read drained the socket, and edge-triggered epoll reports later data; but a
                    // hang-up that came with this edge is only seen by reading on to EOF or the error.
                    if count < scratch.count && !untilDrained && !transport.hasBufferedInput { return }
                case .wouldBlock:
                    return
                case .endOfStream:
                    peerClosed = true
                    if case .lingering = lifecycle {
                        actions.close = true
                        return
                    }
                    process(connection, now: now, writer: &writer, actions: &actions)
                case .failed:
                    // A reset (e.g. mid-body): nothing can be answered any more.
                    actions.close = true
                    return
                case .handshakeFailed:
                    actions.protocolError = .tlsHandshakeFailed
                    actions.close = true
                    return
                }
            }
        }
    }

    init(
        fd: Int32, transport: any ConnectionTransport, token: UInt64, peer: String, loop: EventLoop,
        context: ServerContext
    ) {
        self.fd = fd
        self.token = token
        self.peer = peer
        self.loop = loop
        self.context = context
        let now = MonotonicClock.now()
        self.acceptedAt = now
        self.state = Mutex(
            State(
                transport: transport, parser: HTTPRequestParser(limits: context.limits),
                lastActivity: now, lastWriteProgress: now
            )
        )
    }

    /// Handles readiness reported by epoll (event loop thread).
    func handleEvents(
        readable: Bool, hangUp: Bool, writable: Bool, scratch: UnsafeMutableRawBufferPointer,
        writer: inout ResponseWriter
    ) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            // A hang-up reported while a worker waits is the worker's to read.
            guard !isClosed(state), !state.workerWaiting else { return actions }
            let now = MonotonicClock.now()
            // A TLS write that waits for input is retried on a readable event, a TLS read that
            // waits to send on a writable one: edge-triggered epoll will not report either again.
            let retryWrite = (readable || hangUp) && state.transport.writeWaitsForReadable
            let retryRead = writable && state.transport.readWaitsForWritable
            if (writable || retryWrite) && state.hasPendingOutput {
                guard state.flush(now: now) else {
                    actions.close = true
                    return actions
                }
                if !state.hasPendingOutput {
                    state.process(self, now: now, writer: &writer, actions: &actions)
                }
            }
            if (readable || hangUp || retryRead) && !actions.close {
                state.readAvailable(
                    self, scratch: scratch, untilDrained: hangUp, now: now, writer: &writer, actions: &actions
                )
            }
            // A close_notify the full socket did not take is sent now; without it the client would get
            // neither it nor the FIN before the linger deadline closes the connection.
            if writable && !actions.close, case .lingering = state.lifecycle, state.transport.shutdownWaitsForWritable {
                state.transport.shutdownWrite()
            }
            return actions
        }
    }

    /// Takes the response to the current request (worker thread).
    func complete(response: [UInt8], closes: Bool, writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            guard state.isOpen else { return actions }
            let now = MonotonicClock.now()
            state.inFlight = false
            state.lastActivity = now
            if closes || state.draining { state.closeAfterResponses = true }
            guard state.send(response, now: now) else {
                actions.close = true
                return actions
            }
            state.process(self, now: now, writer: &writer, actions: &actions)
            return actions
        }
    }

    /// Lets the worker that just answered wait for the next request itself (worker thread); false
    /// unless the connection is open, idle, holds no input and the loop's interest could be disarmed.
    func beginWorkerWait() -> Bool {
        state.withLock { state in
            guard state.isOpen, !state.inFlight, !state.closeAfterResponses, !state.hasPendingOutput,
                !state.readPaused, !state.peerClosed, !state.draining, state.parser.bufferedByteCount == 0,
                state.transport.isEstablished, !state.transport.hasBufferedInput
            else { return false }
            if !state.loopInterestDisarmed {
                // Under the lock: the loop closes descriptors only under it, so `fd` is still ours.
                // EPOLLET alone: a hang-up, which epoll always reports, is reported once, not on every wait.
                var event = epoll_event()
                event.events = EPOLLET.rawValue
                event.data.u64 = token
                guard epoll_ctl(loop.epollFD, EPOLL_CTL_MOD, fd, &event) == 0 else { return false }
                state.loopInterestDisarmed = true
            }
            state.workerWaiting = true
            return true
        }
    }

    /// Reads what woke the waiting worker (worker thread); a dispatched request stays with it.
    func readForWaitingWorker(scratch: UnsafeMutableRawBufferPointer, writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            state.workerWaiting = false
            guard !isClosed(state) else { return actions }
            state.readAvailable(
                self, scratch: scratch, untilDrained: false, now: MonotonicClock.now(), writer: &writer,
                actions: &actions)
            return actions
        }
    }

    /// Gives the connection back to its event loop after a worker held it (worker thread).
    func returnToLoop(writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            state.workerWaiting = false
            guard !isClosed(state) else { return actions }
            if state.loopInterestDisarmed {
                // EPOLL_CTL_MOD reports readiness that is already there, so input that arrived
                // while the worker held the connection still wakes the loop.
                var event = epoll_event()
                event.events = Self.loopEvents
                event.data.u64 = token
                guard epoll_ctl(loop.epollFD, EPOLL_CTL_MOD, fd, &event) == 0 else {
                    actions.close = true
                    return actions
                }
                state.loopInterestDisarmed = false
            }
            // Shutdown began while the worker held the connection: what beginDrain skipped.
            if state.draining, state.isOpen, !state.inFlight, !state.closeAfterResponses, !state.hasPendingOutput {
                if state.parser.isMidRequest {
                    state.refusePartialRequest(self, now: MonotonicClock.now(), writer: &writer, actions: &actions)
                } else {
                    actions.close = true
                }
            }
            return actions
        }
    }

    /// Answers the current request 503 because the worker queue is full, and closes.
    func shed(writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            guard state.isOpen else { return actions }
            let now = MonotonicClock.now()
            state.inFlight = false
            state.closeAfterResponses = true
            let response = writer.shedResponse(close: true, version: .http11, omitBody: false)
            guard state.send(response, now: now) else {
                actions.close = true
                return actions
            }
            state.process(self, now: now, writer: &writer, actions: &actions)
            return actions
        }
    }

    /// Enforces the header, body, idle, write and linger deadlines (event loop thread).
    func checkDeadlines(now: UInt64, writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            switch state.lifecycle {
            case .closed:
                return actions
            case .lingering(let until):
                actions.close = now >= until
                return actions
            case .open:
                break
            }
            let context = self.context
            if !state.transport.isEstablished {
                // Nothing can be answered before the handshake completes: a stalled client is dropped.
                if MonotonicClock.elapsed(since: acceptedAt, now: now) >= context.handshakeTimeout {
                    actions.protocolError = .tlsHandshakeTimeout
                    actions.close = true
                }
                return actions
            }
            guard !state.inFlight && !state.workerWaiting else { return actions }
            if state.hasPendingOutput {
                // A client that stops reading its responses is dropped like an idle one.
                actions.close = MonotonicClock.elapsed(since: state.lastWriteProgress, now: now) >= context.idleTimeout
                return actions
            }
            if state.closeAfterResponses { return actions }
            let timedOut: HTTPProtocolError?
            if let started = state.headStartedAt,
                MonotonicClock.elapsed(since: started, now: now) >= context.headerTimeout
            {
                // Only empty lines arrived: no request began, so the connection is closed as an idle one is.
                if state.parser.bufferedByteCount == 0 {
                    actions.close = true
                    return actions
                }
                timedOut = .headerTimeout
            } else if let started = state.bodyStartedAt,
                MonotonicClock.elapsed(since: started, now: now) >= context.bodyTimeout
            {
                timedOut = .bodyTimeout
            } else if state.parser.isMidRequest && !state.parser.isReadingHead
                && MonotonicClock.elapsed(since: state.lastActivity, now: now) >= context.idleTimeout
            {
                timedOut = .bodyTimeout
            } else if !state.parser.isMidRequest
                && MonotonicClock.elapsed(since: max(state.lastActivity, state.lastWriteProgress), now: now)
                    >= context.idleTimeout
            {
                // RFC 9112 §9.5: a server may close an idle connection at any time. It is idle from its last read or
                // its last write progress: a response that took longer than the timeout to go out must not have its
                // connection closed under the client's next request the moment it is done.
                actions.close = true
                return actions
            } else {
                timedOut = nil
            }
            guard let timedOut else { return actions }
            actions.protocolError = timedOut
            state.closeAfterResponses = true
            guard state.send(writer.errorResponse(timedOut), now: now) else {
                actions.close = true
                return actions
            }
            state.process(self, now: now, writer: &writer, actions: &actions)
            return actions
        }
    }

    /// Starts graceful shutdown: idle connections close now, busy ones after their current response.
    func beginDrain(writer: inout ResponseWriter) -> ConnectionActions {
        state.withLock { state in
            var actions = ConnectionActions()
            guard state.isOpen else { return actions }
            state.draining = true
            // A waiting worker sees `draining` when it gives the connection back.
            if state.inFlight || state.workerWaiting { return actions }
            if state.hasPendingOutput {
                state.closeAfterResponses = true
            } else if state.parser.isMidRequest {
                state.refusePartialRequest(self, now: MonotonicClock.now(), writer: &writer, actions: &actions)
            } else {
                actions.close = true
            }
            return actions
        }
    }

    /// Closes the transport; true if it was open (event loop thread only, which owns descriptors).
    func closeTransport() -> Bool {
        state.withLock { state in
            guard !isClosed(state) else { return false }
            // RFC 8446 §6.1: close_notify before closing, also when closing an idle connection (timeout,
            // shutdown); not when a response is cut short, which the client must see as truncated.
            if state.isOpen && !state.inFlight && !state.hasPendingOutput { state.transport.shutdownWrite() }
            state.transport.close()
            state.lifecycle = .closed
            state.outgoing = []
            state.outgoingSent = 0
            state.parser = HTTPRequestParser(limits: state.parser.limits)
            return true
        }
    }

    private func isClosed(_ state: borrowing State) -> Bool {
        if case .closed = state.lifecycle { return true }
        return false
    }
}
