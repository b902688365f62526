/*
 * infoscreen_guard: a Mosquitto 2 plugin for the listeners that devices and monitors use.
 *
 * Mosquitto's acl_file does not check SUBSCRIBE requests; it only filters delivery. A device
 * could therefore join the listeners' shared subscription group ($share/<group>/...): the
 * broker hands every group member its turn in the round robin, and a message whose turn falls
 * on the device is then withheld by the ACL and lost for everyone. This plugin refuses every
 * shared subscription on the listener it is loaded for (SUBACK 0x87 under MQTT 5); all other
 * decisions are left to the password file and the ACL.
 *
 * Built by the project's broker tooling (mosquitto/guard.py) against Mosquitto's plugin
 * headers: Debian's mosquitto-dev and libmosquitto-dev, Alpine's mosquitto-dev.
 */
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#define SHARE_PREFIX "$share/"

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	(void)event;
	(void)userdata;

	if(ed->access == MOSQ_ACL_SUBSCRIBE && ed->topic
			&& strncmp(ed->topic, SHARE_PREFIX, strlen(SHARE_PREFIX)) == 0){
		const char *username = mosquitto_client_username(ed->client);
		mosquitto_log_printf(MOSQ_LOG_NOTICE,
				"infoscreen_guard: refused the shared subscription %s of %s",
				ed->topic, username ? username : "<anonymous>");
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_PLUGIN_DEFER;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	(void)opts;
	(void)opt_count;
	/* Loaded once per listener: each load keeps its own identifier for the cleanup. */
	*userdata = identifier;
	return mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	(void)opts;
	(void)opt_count;
	return mosquitto_callback_unregister(userdata, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
}
