// The official JavaScript SDK (@sentry/node) sending one of each kind of item to the DSN in SENTRY_DSN.
// Run by tests/e2e/test_javascript_sdk.py; prints {"errorId": ..., "messageId": ...} when done.
import * as Sentry from "@sentry/node";

Sentry.init({
	dsn: process.env.SENTRY_DSN,
	release: "jsapp@1.2.3",
	environment: "e2e",
	tracesSampleRate: 1.0,
	enableLogs: true,
});

function innerLookup(orders, key) {
	if (!(key in orders)) {
		throw new TypeError(`order ${key} missing`);
	}
	return orders[key];
}

Sentry.addBreadcrumb({ category: "orders", message: "looking up A-0", level: "info" });

let errorId;
Sentry.withScope((scope) => {
	scope.addAttachment({
		filename: "dump.bin",
		data: new Uint8Array([0, 255, 16, 13, 10, 0, 200, 128]),
		contentType: "application/octet-stream",
	});
	for (let n = 0; n < 3; n++) {
		try {
			innerLookup({}, `A-${n}`);
		} catch (e) {
			errorId = Sentry.captureException(e);
		}
	}
});
const messageId = Sentry.captureMessage("inventory low", "warning");

await Sentry.startSpan({ name: "import orders", op: "task" }, async () => {
	await Sentry.startSpan({ name: "select orders", op: "db" }, async () => {
		await new Promise((resolve) => setTimeout(resolve, 20));
	});
});

Sentry.logger.info("cache miss", { order_id: 7 });
Sentry.logger.error(Sentry.logger.fmt`payment declined for ${"A-7"}`);

const checkInId = Sentry.captureCheckIn({ monitorSlug: "nightly-import", status: "in_progress" });
Sentry.captureCheckIn({ checkInId, monitorSlug: "nightly-import", status: "ok", duration: 2.5 });

Sentry.captureFeedback({
	message: "The order page broke",
	email: "dev@example.org",
	name: "Dev",
	associatedEventId: errorId,
});

await Sentry.close(10000);
console.log(JSON.stringify({ errorId, messageId }));
