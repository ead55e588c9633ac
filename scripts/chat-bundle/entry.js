// What the chat page imports as "rivetkit/client" (see build.mjs).
export * from "rivetkit/client";
