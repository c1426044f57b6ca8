/// Which Bagel this is (`bagel --version`, the server's metadata).
public enum BagelVersion {
    public static let number = "0.4.0"
    /// The git revision the binary was built from. scripts/build-static.sh writes it here for the build and
    /// puts the line back afterwards; a plain `swift build` leaves "unknown".
    public static let revision = "unknown"

    public static var description: String {
        "\(number) (" + (revision == "unknown" ? "development build" : "revision \(revision)") + ")"
    }
}
