// Keyboard helpers for the VNC console.
// QEMU maps each keysym to a key on a US layout and does not press Shift by
// itself, so characters that need Shift are sent with Shift held down.

const NAMED = {
  BackSpace: 0xff08, Tab: 0xff09, Return: 0xff0d, Escape: 0xff1b, Delete: 0xffff,
  Shift_L: 0xffe1, Control_L: 0xffe3, Alt_L: 0xffe9, Super_L: 0xffeb,
  F1: 0xffbe, F2: 0xffbf, F3: 0xffc0, F4: 0xffc1, F5: 0xffc2, F6: 0xffc3,
  F7: 0xffc4, F8: 0xffc5, F9: 0xffc6, F10: 0xffc7, F11: 0xffc8, F12: 0xffc9,
};
const SHIFTED = new Set('~!@#$%^&*()_+{}|:"<>?ABCDEFGHIJKLMNOPQRSTUVWXYZ');

export function keysym(name) {
  if (name in NAMED) return NAMED[name];
  return charKeysym(name);
}

function charKeysym(char) {
  const code = char.codePointAt(0);
  if (char === "\n") return NAMED.Return;
  if (char === "\t") return NAMED.Tab;
  if ((code >= 0x20 && code <= 0x7e) || (code >= 0xa0 && code <= 0xff)) return code;
  return 0x01000000 + code;  // Unicode keysyms
}

export function typeText(rfb, text) {
  for (const char of text.replace(/\r\n/g, "\n")) {
    const shift = SHIFTED.has(char);
    if (shift) rfb.sendKey(NAMED.Shift_L, "ShiftLeft", true);
    rfb.sendKey(charKeysym(char), null);
    if (shift) rfb.sendKey(NAMED.Shift_L, "ShiftLeft", false);
  }
}
