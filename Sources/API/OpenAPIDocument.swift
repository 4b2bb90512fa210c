/// The bytes of `openapi.yaml`, embedded at build time so the binary serves its own description.
enum OpenAPIDocument {
    static var bytes: [UInt8] { PackageResources.openapi_yaml }
}
