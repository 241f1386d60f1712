// asab-sentry collector: live updates. GET /stream speaks Spotlight's sidecar protocol (server-sent events,
// one per envelope); list pages re-read themselves when an envelope arrives. No build step, no libraries.
"use strict";
(function () {
	var status = document.getElementById("live-status");
	var main = document.getElementById("live");
	var pending = null;   // a refresh is scheduled
	var fetching = false; // a refresh is under way
	var again = false;    // something arrived during it: refresh once more after it

	function setStatus(text, cls) {
		if (status) {
			status.textContent = text;
			status.className = "live " + cls;
		}
	}

	function schedule() {
		if (fetching) {
			again = true;
		} else if (pending === null) {
			pending = window.setTimeout(refresh, 250);
		}
	}

	function refresh() {
		pending = null;
		fetching = true;
		fetch(window.location.href, { headers: { "Accept": "text/html" }, cache: "no-store" })
			.then(function (response) { return response.text(); })
			.then(function (html) {
				var page = new DOMParser().parseFromString(html, "text/html");
				var fresh = page.getElementById("live");
				if (fresh && main) {
					main.innerHTML = fresh.innerHTML;
					main.setAttribute("data-updated", String(Date.now()));
				}
			})
			.catch(function () { setStatus("live (refresh failed)", "off"); })
			.finally(function () {
				fetching = false;
				if (again) {
					again = false;
					schedule();
				}
			});
	}

	document.querySelectorAll("form[data-confirm]").forEach(function (form) {
		form.addEventListener("submit", function (event) {
			if (!window.confirm(form.getAttribute("data-confirm"))) {
				event.preventDefault();
			}
		});
	});

	if (!window.EventSource) {
		setStatus("no live updates", "off");
		return;
	}
	var source = new EventSource("/stream");
	source.onopen = function () { setStatus("live", "on"); };
	source.onerror = function () { setStatus("reconnecting", "off"); };
	source.addEventListener("application/x-sentry-envelope", function () {
		if (main && main.getAttribute("data-live") === "refresh") {
			schedule();
		}
	});
})();
