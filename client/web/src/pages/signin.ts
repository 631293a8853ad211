import { classify, connections } from "../api";
import { alertBox, field, h } from "../dom";
import { navigate, type Page } from "../router";
import { clearKey, setKey } from "../session";

export function signinPage(onSignedIn: () => void): Page {
  return (root, query) => {
    const keyInput = h("input", { id: "api-key", "data-testid": "api-key", type: "password", autocomplete: "off", spellcheck: "false", required: true, placeholder: "fgk_…" });
    const remember = h("input", { id: "remember", "data-testid": "remember", type: "checkbox" });
    const submit = h("button", { class: "primary", type: "submit", id: "sign-in", "data-testid": "sign-in" }, "Sign in");
    const msg = h("div", { class: "form-msg", "aria-live": "polite" });
    if (query.get("expired")) {
      msg.append(alertBox("warning", "signin-expired", "Your feedgate API key was not accepted. Sign in again."));
    }
    const form = h(
      "form",
      {
        class: "card signin-card",
        id: "signin-form",
        "data-testid": "signin-form",
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          const key = keyInput.value.trim();
          if (!key) return;
          submit.disabled = true;
          submit.textContent = "Checking…";
          msg.replaceChildren();
          setKey(key, remember.checked);
          try {
            await connections.getConnectionStatus({});
          } catch (e) {
            const f = classify(e);
            if (f.kind === "bad-key") {
              clearKey();
              msg.append(alertBox("error", "signin-error", "That API key was not accepted."));
              submit.disabled = false;
              submit.textContent = "Sign in";
              return;
            }
            // Anything else (the gateway is busy, say) does not say the key
            // is wrong: go on, the pages will show their own errors.
          }
          onSignedIn();
          navigate("auth");
        },
      },
      h("h1", null, "Sign in to feedgate"),
      h("p", { class: "muted" }, "Paste your feedgate API key. It is sent as a bearer token with each request and kept only in this browser."),
      field("API key", keyInput),
      h("label", { class: "check" }, remember, " Remember on this device"),
      msg,
      h("div", { class: "actions" }, submit),
    );
    root.append(h("div", { class: "signin-wrap" }, form));
    keyInput.focus();
  };
}
