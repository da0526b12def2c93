#!/bin/sh
# Builds the macOS installer of the Gatehouse client: Gatehouse-VERSION.pkg with
#   /usr/local/bin/gatehouse                              CLI and client service
#   /Applications/Gatehouse.app                           the desktop app (gatehouse-gui)
#   /Library/LaunchDaemons/com.gatehouse.client.plist     the client service (launchd)
# Universal binaries (arm64 + x86_64). Run on macOS from the repository root:
#   installers/macos/build-pkg.sh
# Signing (optional): PKG_SIGN_ID="Developer ID Installer: ..." and
# APP_SIGN_ID="Developer ID Application: ..." in the environment.
# Written, not run here (Linux CI): see installers/macos/README.md.
set -eu

cd "$(dirname "$0")/../.."
HERE=installers/macos
# The workspace version ([workspace.package] in Cargo.toml).
VERSION=$(awk -F'"' '/^\[/ { s = $0 } s == "[workspace.package]" && /^version *=/ { print $2; exit }' Cargo.toml)
OUT=target/macos-pkg
ROOT=$OUT/root

for target in aarch64-apple-darwin x86_64-apple-darwin; do
    rustup target add "$target"
    cargo build --release --locked --target "$target" -p gatehouse-client -p gatehouse-gui
done

rm -rf "$OUT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/Library/LaunchDaemons" \
    "$ROOT/Applications/Gatehouse.app/Contents/MacOS"

universal() { # NAME DEST: one fat binary from both targets' builds
    lipo -create -output "$2" \
        "target/aarch64-apple-darwin/release/$1" "target/x86_64-apple-darwin/release/$1"
}
universal gatehouse "$ROOT/usr/local/bin/gatehouse"
universal gatehouse-gui "$ROOT/Applications/Gatehouse.app/Contents/MacOS/gatehouse-gui"
sed "s/@VERSION@/$VERSION/g" "$HERE/Info.plist" > "$ROOT/Applications/Gatehouse.app/Contents/Info.plist"
cp "$HERE/com.gatehouse.client.plist" "$ROOT/Library/LaunchDaemons/"
chmod 0755 "$ROOT/usr/local/bin/gatehouse" "$ROOT/Applications/Gatehouse.app/Contents/MacOS/gatehouse-gui"
chmod 0644 "$ROOT/Library/LaunchDaemons/com.gatehouse.client.plist"

if [ -n "${APP_SIGN_ID:-}" ]; then
    # Hardened runtime: required for notarization.
    codesign --force --options runtime --timestamp --sign "$APP_SIGN_ID" "$ROOT/usr/local/bin/gatehouse"
    codesign --force --options runtime --timestamp --sign "$APP_SIGN_ID" "$ROOT/Applications/Gatehouse.app"
fi

# The app bundle must not be relocated to wherever an older copy sits.
pkgbuild --analyze --root "$ROOT" "$OUT/components.plist"
plutil -replace 0.BundleIsRelocatable -bool NO "$OUT/components.plist"

pkgbuild --root "$ROOT" \
    --component-plist "$OUT/components.plist" \
    --identifier com.gatehouse.client \
    --version "$VERSION" \
    --scripts "$HERE/scripts" \
    --install-location / \
    "$OUT/gatehouse-client-component.pkg"

set -- --distribution "$HERE/distribution.xml" --package-path "$OUT"
if [ -n "${PKG_SIGN_ID:-}" ]; then
    set -- "$@" --sign "$PKG_SIGN_ID"
fi
productbuild "$@" "target/Gatehouse-$VERSION.pkg"
echo "built target/Gatehouse-$VERSION.pkg"
