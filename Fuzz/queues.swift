// libFuzzer target `queues` (scripts/fuzz): the queues file parser, compiled into one module with its sources.
// Input: the file; an accepted one names each queue once.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Data(UnsafeBufferPointer(start: data, count: size))
    do {
        let configuration = try QueueConfiguration.parse(bytes)
        if Set(configuration.entries.map(\.name)).count != configuration.entries.count {
            FileHandle.standardError.write(Data("INVARIANT: duplicate queue names\n".utf8))
            abort()
        }
    } catch {
        _ = error.description
    }
    return 0
}
